"""Where the store takes manifests and blob bytes from: a registry (``registry.RegistryClient``) or, for an
air-gapped device, the OCI image layout of an update bundle (``reconciler/bundle/``).

The store asks a source for exactly two things and trusts neither answer: a pinned manifest must hash to
its digest, and every blob's bytes to the digest in its descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from reconciler.artifacts.manifest import Descriptor, Manifest
from reconciler.artifacts.reference import Reference


class BlobSource(Protocol):
    def get_manifest(self, ref: Reference) -> Manifest:
        """The parsed manifest of ``ref``; a pinned reference must match its digest byte for byte."""
        ...

    def download_blob(self, ref: Reference, desc: Descriptor, ingest: Path,
                      progress: Callable[[int], None] | None = None) -> int:
        """Write blob ``desc`` into ``ingest`` (resuming what is there), verified; returns bytes transferred."""
        ...
