"""OCI image manifests as frozen values, parsed defensively from registry bytes."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass

from reconciler.artifacts.reference import is_digest
from reconciler.errors import IntegrityError

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"  # ORAS convention: "true" means extract this archive layer
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# A manifest is a small JSON document; anything bigger is refused before parsing.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def annotation(self, key: str) -> str | None:
        return next((v for k, v in self.annotations if k == key), None)

    @property
    def title(self) -> str | None:
        return self.annotation(TITLE)

    @property
    def is_archive(self) -> str | None:
        """``"tar"`` or ``"tar+gzip"`` when this layer is to be extracted, else None.

        oras-py labels every plain file ``...layer.v1.tar`` and every directory ``...tar+gzip``; ORAS Go
        marks archives to unpack with the ``io.deis.oras.content.unpack`` annotation.  So: extract
        tar+gzip layers, and plain tar layers only when that annotation asks for it."""
        if self.media_type == TAR_GZIP or self.media_type.endswith((".tar.gzip", "tar+gzip")):
            return "tar+gzip"
        if self.annotation(UNPACK) == "true":
            return "tar"
        return None


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    raw: bytes
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def total_size(self) -> int:
        return sum(layer.size for layer in self.layers)


def safe_relative_path(name: str, what: str) -> str:
    """Return ``name`` normalised if it stays inside a directory, else raise IntegrityError."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or "\\" in name:
        raise IntegrityError(f"{what}: unsafe path {name!r} (absolute or empty)")
    parts = name.split("/")
    if any(p == ".." for p in parts):
        raise IntegrityError(f"{what}: unsafe path {name!r} (contains '..')")
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm.startswith("../"):
        raise IntegrityError(f"{what}: unsafe path {name!r}")
    return norm


def _descriptor(doc: object, where: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where}: descriptor is not an object")
    media_type, digest, size = doc.get("mediaType"), doc.get("digest"), doc.get("size")
    if not isinstance(digest, str) or not is_digest(digest):
        raise IntegrityError(f"{where}: unsupported or malformed digest {digest!r} (only sha256 is accepted)")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise IntegrityError(f"{where}: size {size!r} is not a non-negative integer")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise IntegrityError(f"{where}: annotations is not an object")
    pairs = tuple(sorted((str(k), str(v)) for k, v in annotations.items()))
    return Descriptor(str(media_type or ""), digest, size, pairs)


def parse_manifest(raw: bytes, digest: str, where: str) -> Manifest:
    """Parse manifest bytes whose ``digest`` the caller has already checked."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where}: manifest is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{where}: manifest is not a JSON object")
    media_type = str(doc.get("mediaType") or MANIFEST_TYPES[0])
    if media_type in INDEX_TYPES or "manifests" in doc:
        raise IntegrityError(f"{where}: is an image index, not an artifact manifest (pin one manifest)")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise IntegrityError(f"{where}: manifest has no 'layers' list")
    layers = tuple(_descriptor(d, f"{where} layers[{i}]") for i, d in enumerate(layers_doc))
    config = _descriptor(doc["config"], f"{where} config") if doc.get("config") else None
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        annotations = {}
    pairs = tuple(sorted((str(k), str(v)) for k, v in annotations.items()))
    return Manifest(digest, media_type, raw, config, layers, pairs)
