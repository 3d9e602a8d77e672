"""The bundle manifest (``manifest.json``), read strictly: every problem names the file and the field.

    {"format": "edge-reconciler/bundle/v1", "kind": "FleetBundle" | "StatusBundle", "sequence": 17,
     "created": "2026-01-02T03:04:05Z", "branch": "main", "commit": "<fleet tip>", "since": "<commit>" | null,
     "selection": {"devices": [...], "groups": [...], "all": false}, "devices": ["cam-01", ...],
     "refs": {"refs/heads/main": "<oid>", "refs/heads/status/cam-01": "<oid>"},
     "members": [{"path": "oci/index.json", "size": 123, "sha256": "<hex>"}, ...]}
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import IntegrityError

FORMAT = "edge-reconciler/bundle/v1"
KINDS = ("FleetBundle", "StatusBundle")
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
NAMESPACE = "edge-reconciler-bundle"  # the SSH signature namespace: a git commit signature cannot pass as one
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024
REF_NAME = "org.opencontainers.image.ref.name"

_BLOB = re.compile(r"^oci/blobs/sha256/([0-9a-f]{64})$")
_MEMBER = re.compile(r"^(oci/oci-layout|oci/index\.json|oci/blobs/sha256/[0-9a-f]{64}|git/pack-[0-9a-f]{40,64}\.(pack|idx))$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_OID = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_REF = re.compile(r"^refs/heads/[A-Za-z0-9][A-Za-z0-9._/-]{0,200}$")


@dataclass(frozen=True)
class Member:
    path: str
    size: int
    sha256: str

    @property
    def blob_digest(self) -> str | None:
        """``sha256:<hex>`` for a member of the OCI layout's blob directory, else None."""
        m = _BLOB.match(self.path)
        return f"sha256:{m.group(1)}" if m else None


@dataclass(frozen=True)
class BundleManifest:
    kind: str
    sequence: int
    created: str
    branch: str
    commit: str
    members: tuple[Member, ...]
    refs: Mapping[str, str] = field(default_factory=dict)
    devices: tuple[str, ...] = ()
    since: str | None = None
    selection: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "kind": self.kind, "sequence": self.sequence, "created": self.created,
               "branch": self.branch, "commit": self.commit, "since": self.since,
               "selection": dict(self.selection), "devices": list(self.devices), "refs": dict(self.refs),
               "members": [{"path": m.path, "size": m.size, "sha256": m.sha256} for m in self.members]}
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    @property
    def payload_bytes(self) -> int:
        return sum(m.size for m in self.members)


def file_member(path: Path, name: str) -> Member:
    """``path`` as member ``name``: its size and sha256 (a blob's is its name: it was verified on the way in)."""
    if name.startswith("oci/blobs/sha256/"):
        return Member(name, path.stat().st_size, path.name)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return Member(name, path.stat().st_size, h.hexdigest())


def member_path_ok(path: str) -> bool:
    return bool(_MEMBER.match(path))


def parse(raw: bytes, where: str) -> BundleManifest:
    """The manifest in ``raw``; IntegrityError naming ``where`` and the field for anything off."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{where}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{where}: not valid JSON ({exc})") from None

    def bad(field_name: str, expected: str) -> IntegrityError:
        return IntegrityError(f"{where}: field {field_name!r}: expected {expected}")

    if not isinstance(doc, dict):
        raise bad("(top)", "an object")
    if doc.get("format") != FORMAT:
        raise bad("format", f"{FORMAT!r} (got {str(doc.get('format'))[:60]!r})")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise bad("kind", " or ".join(KINDS))
    sequence = doc.get("sequence")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or sequence < 0:
        raise bad("sequence", "a non-negative integer")
    for name in ("created", "branch", "commit"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise bad(name, "a non-empty string")
    if not _OID.match(doc["commit"]):
        raise bad("commit", "a commit id")
    since = doc.get("since")
    if since is not None and (not isinstance(since, str) or not _OID.match(since)):
        raise bad("since", "a commit id or null")
    devices = doc.get("devices", [])
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise bad("devices", "a list of device names")
    refs = doc.get("refs", {})
    if not isinstance(refs, dict) or not all(isinstance(k, str) and _REF.match(k) and isinstance(v, str)
                                             and _OID.match(v) for k, v in refs.items()):
        raise bad("refs", "an object of refs/heads/... -> commit id")
    selection = doc.get("selection", {})
    if not isinstance(selection, dict):
        raise bad("selection", "an object")
    members = doc.get("members")
    if not isinstance(members, list):
        raise bad("members", "a list")
    return BundleManifest(kind, sequence, doc["created"], doc["branch"], doc["commit"],
                          _members(members, bad), refs, tuple(devices), since, selection)


def _members(items: Sequence[Any], bad: Any) -> tuple[Member, ...]:
    out: list[Member] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"members[{i}]"
        if not isinstance(item, dict):
            raise bad(where, "an object with path, size and sha256")
        path, size, digest = item.get("path"), item.get("size"), item.get("sha256")
        if not isinstance(path, str) or not member_path_ok(path):
            raise bad(f"{where}.path", "oci/oci-layout, oci/index.json, oci/blobs/sha256/<hex> or git/pack-*")
        if path in seen:
            raise bad(f"{where}.path", f"a path listed once ({path} is listed twice)")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"{where}.size", "a non-negative integer")
        if not isinstance(digest, str) or not _HEX.match(digest):
            raise bad(f"{where}.sha256", "64 hex digits")
        member = Member(path, size, digest)
        if member.blob_digest is not None and member.blob_digest != f"sha256:{digest}":
            raise bad(f"{where}.sha256", f"the digest its path names ({path})")
        seen.add(path)
        out.append(member)
    return tuple(out)
