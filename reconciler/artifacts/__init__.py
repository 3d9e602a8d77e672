"""OCI artifact store: verified, resumable, deduplicated pulls over oras-py's registry session."""

from reconciler.artifacts.reference import Reference
from reconciler.artifacts.registry import RegistryClient
from reconciler.artifacts.store import ArtifactStore, GcResult, PullResult

__all__ = ["ArtifactStore", "GcResult", "PullResult", "Reference", "RegistryClient"]
