"""Where the store keeps things under the data dir, and reading what is activated.

    blobs/sha256/<hex>                 verified blobs (and manifests), read-only, each fetched once
    ingest/<hex>                       partial downloads, resumed with HTTP Range
    models/<name>/.v-<version>-<id>/   one activated version: layer files + .reconciler-manifest.json
    models/<name>/<version>            symlink to it, switched atomically (temp link + rename)

The store (``store.py``) and its helpers (``activation``, ``gc``, ``verify``) all read the layout from
here, so none of the helpers needs the store itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from reconciler.errors import IntegrityError

META = ".reconciler-manifest.json"

_HEX = re.compile(r"^[0-9a-f]{64}$")


class StoreLayout:
    """The paths of a store under ``data_dir`` and the read-only questions about them."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.blobs = self.root / "blobs" / "sha256"
        self.ingest = self.root / "ingest"
        self.models = self.root / "models"

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not _HEX.match(hexdigest):
            raise IntegrityError(f"unsupported digest {digest!r}")
        return self.blobs / hexdigest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_meta(self, model: str, version: str) -> dict[str, Any] | None:
        link = self.models / model / version
        try:
            meta: dict[str, Any] = json.loads((link / META).read_text())
        except (OSError, ValueError):
            return None
        return meta

    def activated(self, model: str, version: str) -> Path | None:
        """The activated directory of a model version, or None when there is none."""
        link = self.models / model / version
        return link if link.is_symlink() and self.read_meta(model, version) is not None else None

    def versions(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(model, version, metadata) of every activated version."""
        found = []
        if not self.models.is_dir():
            return []
        for model_dir in sorted(self.models.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            for entry in sorted(model_dir.iterdir()):
                if entry.is_symlink() and not entry.name.startswith("."):
                    meta = self.read_meta(model_dir.name, entry.name)
                    if meta is not None:
                        found.append((model_dir.name, entry.name, meta))
        return found
