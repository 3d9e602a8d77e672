"""The bundle's OCI image layout (image-spec ``image-layout.md``): ``oci-layout``, ``index.json`` naming each
manifest by its reference (``org.opencontainers.image.ref.name``), and ``blobs/sha256/<hex>``.

Standard tools read it once the bundle is unpacked (``tar -xf bundle.tar oci``): ``skopeo inspect --raw
oci:oci:REF``, ``skopeo copy oci:oci:REF docker://...``.  ``LayoutWriter`` fills it from registries on the
admin side; ``read_index`` gives the device the reference -> digest map for tag references.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reconciler.artifacts.reference import Reference
from reconciler.artifacts.source import BlobSource
from reconciler.bundle.format import REF_NAME
from reconciler.errors import IntegrityError

INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
LAYOUT = b'{"imageLayoutVersion":"1.0.0"}\n'
MAX_INDEX_BYTES = 16 * 1024 * 1024
MODELS = "io.edge-reconciler.models"  # which model versions use a manifest, for a person reading the index


class LayoutWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict[str, object]] = {}

    def add(self, reference: str, source: BlobSource, used_by: str) -> str:
        """Copy the manifest of ``reference`` and every blob it names; returns the manifest's digest."""
        ref = Reference.parse(reference)
        manifest = source.get_manifest(ref)  # a pinned reference is checked against its digest
        name = str(ref)
        entry = self._entries.get(name)
        if entry is not None:
            entry["annotations"][MODELS] += f",{used_by}"  # type: ignore[index]
            return manifest.digest
        descriptors = [manifest.config] if manifest.config is not None else []
        for desc in [*descriptors, *manifest.layers]:
            target = self.blobs / desc.digest.split(":", 1)[1]
            if target.exists():
                continue
            partial = target.with_suffix(".partial")
            source.download_blob(ref, desc, partial)  # verified against the descriptor's digest
            os.replace(partial, target)
        (self.blobs / manifest.digest.split(":", 1)[1]).write_bytes(manifest.raw)
        self._entries[name] = {"mediaType": manifest.media_type, "digest": manifest.digest,
                               "size": len(manifest.raw), "annotations": {REF_NAME: name, MODELS: used_by}}
        return manifest.digest

    def finish(self) -> None:
        (self.root / "oci-layout").write_bytes(LAYOUT)
        index = {"schemaVersion": 2, "mediaType": INDEX_TYPE,
                 "manifests": [self._entries[k] for k in sorted(self._entries)]}
        (self.root / "index.json").write_text(json.dumps(index, indent=1) + "\n")


def read_index(path: Path) -> dict[str, str]:
    """reference name -> manifest digest, from an ``index.json`` the bundle's manifest vouched for."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    if len(raw) > MAX_INDEX_BYTES:
        raise IntegrityError(f"{path}: larger than {MAX_INDEX_BYTES} bytes")
    try:
        doc = json.loads(raw)
        return {str(m["annotations"][REF_NAME]): str(m["digest"]) for m in doc.get("manifests", [])
                if REF_NAME in (m.get("annotations") or {})}
    except (ValueError, TypeError, KeyError, AttributeError):
        raise IntegrityError(f"{path}: not an OCI image index") from None
