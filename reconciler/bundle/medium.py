"""The bundle as the agent pass's medium (``agent/medium.py``): its git content is the remote the mirror
fetches from, and the artifact store takes manifests from the blobs the bundle brought in.

Nothing here trusts the bundle: the fetch is libgit2's (object ids checked), the pass's own verify step
refuses a rewind, and the store checks every manifest and blob against the digest the fleet commit pins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pygit2

from reconciler.artifacts.manifest import MAX_MANIFEST_BYTES, Descriptor, Manifest, parse_manifest
from reconciler.artifacts.reference import Reference
from reconciler.artifacts.store import ArtifactStore
from reconciler.errors import IntegrityError, NotFound
from reconciler.git.mirror import FleetMirror


class BundleMedium:
    def __init__(self, git_dir: Path, index: dict[str, str], store: ArtifactStore, *, branch: str,
                 device: str, label: str, status_mirror: FleetMirror, acked: str | None) -> None:
        self.git_dir = git_dir
        self.status_mirror = status_mirror  # the fleet mirror, or the statusRepo's clone
        self.acked = pygit2.Oid(hex=acked) if acked else None  # the server's status tip the bundle carries
        self.index = index
        self.store = store
        self.branch_ref = f"refs/heads/{branch}"
        self.status_ref = f"refs/heads/status/{device}"
        self.label = label

    # -- git ------------------------------------------------------------------------------------------------
    def fetch(self, mirror: FleetMirror) -> pygit2.Oid:
        tip = mirror.fetch_objects(str(self.git_dir), [self.branch_ref])[self.branch_ref]
        if tip is None:
            raise NotFound(f"{self.label}: carries no {self.branch_ref}")
        mirror.set_tracking(self.branch_ref, tip)
        # the server's status tip when the bundle was made: the commits it already has are no longer queued.
        # The device made them, so it has them, unless it lost its data dir: then they come from the bundle.
        status, acked = self.status_mirror, self.acked
        if acked is not None and acked not in status.repo:
            acked = status.fetch_objects(str(self.git_dir), [self.status_ref])[self.status_ref]
        known = status.remote_tip(self.status_ref)
        if acked is not None and (known is None or status.is_descendant(acked, known)):
            status.set_tracking(self.status_ref, acked)
        return tip

    # -- blobs (BlobSource) ---------------------------------------------------------------------------------
    def blobs(self) -> BundleMedium:
        return self

    def get_manifest(self, ref: Reference) -> Manifest:
        digest = ref.digest or self.index.get(str(ref))
        if digest is None or not self.store.has_blob(digest):
            raise NotFound(f"{ref}: not in {self.label} (offline: make a bundle that selects this device)")
        raw = self.store.blob_path(digest).read_bytes()[: MAX_MANIFEST_BYTES + 1]
        actual = "sha256:" + hashlib.sha256(raw).hexdigest()
        if actual != digest:
            raise IntegrityError(f"manifest {ref}: digest mismatch: expected {digest}, got {actual}")
        return parse_manifest(raw, digest, f"manifest {ref} from {self.label}")

    def download_blob(self, ref: Reference, desc: Descriptor, ingest: Path,
                      progress: Callable[[int], None] | None = None) -> int:
        # every blob the bundle carries entered the store while it was read: one still missing is not in it
        raise NotFound(f"blob {desc.digest} of {ref}: not in {self.label}")

