"""Directories packed for ``publish`` the way ORAS clients unpack them.

A directory becomes one tar+gzip layer titled with its name, whose entries start with that name (as oras-py
and the Go ORAS file store write them), annotated ``io.deis.oras.content.unpack: "true"`` and
``io.deis.oras.content.digest``: the sha256 of the uncompressed tar, which the Go ORAS library checks before
it unpacks.  So ``oras pull``, oras-py and our ``pull`` all produce the same tree.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from reconciler.artifacts.manifest import TAR_GZIP, UNPACK

DIGEST = "io.deis.oras.content.digest"


class _Hashing:
    """A write-only file that hashes what goes through it on its way to ``out``."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        return self.out.write(data)

    def flush(self) -> None:
        self.out.flush()


def pack_directory(src: Path, work: Path) -> tuple[Path, str]:
    """``src`` as ``work/<name>`` (tar+gzip); returns the file and the digest of the uncompressed tar."""
    dest = work / src.name
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        hashing = _Hashing(gz)  # type: ignore[arg-type]
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            tar.add(str(src), arcname=src.name, recursive=False)
            for path in sorted(src.rglob("*")):
                tar.add(str(path), arcname=f"{src.name}/{path.relative_to(src).as_posix()}", recursive=False)
    return dest, "sha256:" + hashing.sha.hexdigest()


def prepare(files: Sequence[Path], work: Path) -> tuple[list[str], Path]:
    """The file arguments for oras-py's ``push`` (directories packed, with their media type) and an annotation
    file that puts the unpack annotations on each directory's layer."""
    out: list[str] = []
    annotations: dict[str, Any] = {}
    for path in files:
        if not path.is_dir():
            out.append(str(path))
            continue
        slot = work / f"dir{len(out)}"  # one folder per directory: the packed file keeps the directory's name
        slot.mkdir()
        packed, digest = pack_directory(path, slot)
        out.append(f"{packed}:{TAR_GZIP}")
        annotations[str(packed)] = {UNPACK: "true", DIGEST: digest}
    annotation_file = work / "annotations.json"
    annotation_file.write_text(json.dumps(annotations))
    return out, annotation_file
