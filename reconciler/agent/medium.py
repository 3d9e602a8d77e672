"""What stands in for the git server and the registry during one pass of an offline device.

An air-gap bundle (``reconciler/bundle/``) implements it: its git content is fetched into the device's mirror
and its OCI layout serves manifests and blobs to the store, so the pass runs the same steps and the same
checks (fast-forward, validation, digests) as it does online; only the transport differs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import pygit2

if TYPE_CHECKING:
    from reconciler.artifacts.source import BlobSource
    from reconciler.git.mirror import FleetMirror


class Medium(Protocol):
    def fetch(self, mirror: FleetMirror) -> pygit2.Oid:
        """Bring the fleet branch into ``mirror`` as a fetch would, and return its tip."""
        ...

    def blobs(self) -> BlobSource:
        """Where the store takes manifests and blobs from instead of a registry."""
        ...
