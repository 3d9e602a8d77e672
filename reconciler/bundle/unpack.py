"""Reading a bundle: one pass over the stream, every member checked against the manifest before the caller
may use any of it.

``manifest.json`` comes first (then its signature); each later member must be listed there with its size
and sha256, appear once, and be a regular file.  OCI blobs go straight into the artifact store's ingest area,
hashed on the way (the store verifies and keeps them only when the whole bundle checks out); the small
members (index, git packs) land in a staging directory.  A bundle cut short, a member changed, added or
missing, raises IntegrityError and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from reconciler.bundle import bundlefile, signature
from reconciler.bundle.format import (
    MANIFEST,
    MAX_MANIFEST_BYTES,
    MAX_SIGNATURE_BYTES,
    SIGNATURE,
    BundleManifest,
    Member,
    parse,
)
from reconciler.errors import IntegrityError

# digest, size, stream -> True when it was copied in (False: the store already holds it)
BlobSink = Callable[[str, int, IO[bytes]], bool]


@dataclass(frozen=True)
class Unpacked:
    manifest: BundleManifest
    staging: Path  # oci/index.json, oci/oci-layout, git/pack-* as listed
    signer: str | None  # the allowed principal that signed manifest.json, when one did
    blobs: tuple[str, ...]  # digests the blob sink took in

    def packs(self) -> list[Path]:
        return sorted(p for p in (self.staging / "git").glob("pack-*") if p.suffix in (".pack", ".idx"))


def read_bundle(path: Path, staging: Path, *, kind: str, blob_sink: BlobSink | None = None,
                allowed_signers: Path | None = None) -> Unpacked:
    """Read and check ``path`` into ``staging`` (which must not exist yet)."""
    staging.mkdir(parents=True)
    try:
        return _read(path, staging, kind, blob_sink, allowed_signers)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _read(path: Path, staging: Path, kind: str, blob_sink: BlobSink | None,
          allowed_signers: Path | None) -> Unpacked:
    where = str(path)
    taken: list[str] = []
    with bundlefile.reader(path) as tar:
        first = tar.next()
        if first is None or first.name != MANIFEST or not first.isfile():
            raise IntegrityError(f"{where}: the first member must be {MANIFEST} (not a bundle, or damaged)")
        raw = _read_small(tar, first, MAX_MANIFEST_BYTES, where)
        manifest = parse(raw, f"{where}:{MANIFEST}")
        if manifest.kind != kind:
            raise IntegrityError(f"{where}: is a {manifest.kind}, expected a {kind}")
        member = tar.next()
        signer = None
        if member is not None and member.name == SIGNATURE:
            sig = _read_small(tar, member, MAX_SIGNATURE_BYTES, where)
            if allowed_signers is not None:
                signer = signature.verify(raw, sig, allowed_signers, where)
            member = tar.next()
        elif allowed_signers is not None:
            raise IntegrityError(f"{where}: unsigned, and this device accepts only bundles signed by a key in "
                                 f"{allowed_signers}")
        expected = {m.path: m for m in manifest.members}
        seen: set[str] = set()
        while member is not None:
            listed = expected.get(member.name)
            if listed is None or member.name in seen:
                what = "listed twice" if member.name in seen else "not listed in manifest.json"
                raise IntegrityError(f"{where}: member {member.name!r} is {what}")
            if not member.isfile() or member.size != listed.size:
                raise IntegrityError(f"{where}: member {member.name} is not a regular file of {listed.size} "
                                     f"bytes as manifest.json says")
            seen.add(member.name)
            stream = tar.extractfile(member)
            assert stream is not None  # a regular file
            digest = listed.blob_digest
            if digest is not None and blob_sink is not None:
                try:
                    if blob_sink(digest, listed.size, stream):
                        taken.append(digest)
                except IntegrityError as exc:
                    raise IntegrityError(f"{where}: member {member.name} was changed: {exc}") from None
            else:
                _copy_checked(stream, staging / listed.path, listed, where)
            member = tar.next()
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(f"{where}: truncated: {len(missing)} member(s) listed in manifest.json are "
                             f"missing (first: {missing[0]})")
    return Unpacked(manifest, staging, signer, tuple(taken))


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, where: str) -> bytes:
    if not member.isfile() or member.size > limit:
        raise IntegrityError(f"{where}: {member.name} is not a file of at most {limit} bytes")
    stream = tar.extractfile(member)
    assert stream is not None
    data = stream.read(limit + 1)
    if len(data) != member.size:
        raise IntegrityError(f"{where}: {member.name} is truncated")
    return data


def _copy_checked(stream: IO[bytes], target: Path, member: Member, where: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    size = 0
    with open(target, "xb") as out:
        while chunk := stream.read(bundlefile.BUFFER):
            hasher.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != member.size or hasher.hexdigest() != member.sha256:
        raise IntegrityError(f"{where}: member {member.path} was changed: its sha256 is not the one "
                             "manifest.json lists")
