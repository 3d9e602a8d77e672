"""Guarded extraction of tar and tar+gzip layers into a version directory.

oras-py's ``extract_targz`` compares path strings (``/out2`` passes a check for ``/out``); we refuse
instead: absolute names, ``..``, devices and fifos, symlinks whose target is absolute or climbs with
``..`` (so no chain of links can leave the directory), hard links to anything but a file extracted
before, writing through an existing symlink, sparse entries, and more than ``max_bytes`` of content in total
(checked from each header before its content is written).  Files and directories are fsynced.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from reconciler.artifacts.manifest import safe_relative_path
from reconciler.durable import fsync_dir, is_disk_full
from reconciler.errors import DiskFull, IntegrityError

MAX_MEMBERS = 100_000
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Extracted:
    files: dict[str, str]  # relative path -> "sha256:<hex>" of each regular file
    links: dict[str, str]  # relative path -> symlink target
    size: int


def extract(archive: Path, dest: Path, *, compression: str, max_bytes: int, what: str) -> Extracted:
    """Extract ``archive`` (``tar`` or ``tar+gzip``) into the existing directory ``dest``."""
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    written_dirs: set[Path] = {dest}
    total = 0
    try:
        with tarfile.open(archive, "r|gz" if compression == "tar+gzip" else "r|") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise IntegrityError(f"{what}: archive has more than {MAX_MEMBERS} entries")
                raw_name = member.name.rstrip("/")
                if raw_name in ("", "."):
                    continue
                name = safe_relative_path(raw_name, f"{what}: archive member")
                if member.issparse():  # a 129-byte header can describe a file of any size
                    raise IntegrityError(f"{what}: archive member {name!r} is a sparse file: refused")
                target = dest / name
                _check_parent(dest, target, what, name)
                if member.isdir():
                    _refuse_symlink(target, what, name)
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    total += member.size
                    if total > max_bytes:
                        raise IntegrityError(f"{what}: archive expands beyond the cap of {max_bytes} bytes")
                    source = tar.extractfile(member)
                    if source is None:
                        raise IntegrityError(f"{what}: cannot read archive member {name!r}")
                    files[name] = _write(source, target, member.size, what, name)
                    written_dirs.add(target.parent)
                    links.pop(name, None)
                elif member.issym():
                    link = member.linkname
                    if not link or link.startswith("/") or ".." in link.split("/"):
                        raise IntegrityError(
                            f"{what}: symlink {name!r} -> {link!r} would leave the version directory"
                        )
                    _remove_existing(target, what, name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(link, target)
                    links[name] = link
                    files.pop(name, None)
                elif member.islnk():
                    source_name = safe_relative_path(member.linkname, f"{what}: hard link {name!r}")
                    if source_name not in files:
                        raise IntegrityError(
                            f"{what}: hard link {name!r} -> {member.linkname!r} does not name a file "
                            "extracted before it"
                        )
                    _remove_existing(target, what, name)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.link(dest / source_name, target, follow_symlinks=False)
                    files[name] = files[source_name]
                else:
                    raise IntegrityError(f"{what}: archive member {name!r} is a device, fifo or unknown type")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if is_disk_full(exc):
            raise DiskFull(f"{dest}: no space left on device while extracting {what}") from None
        if isinstance(exc, OSError) and exc.errno is not None:
            raise IntegrityError(f"{what}: cannot extract archive: {exc.strerror}") from None
        # A corrupt gzip stream is an OSError without errno.
        raise IntegrityError(f"{what}: not a valid {compression} archive ({type(exc).__name__})") from None
    # every file was fsynced as it was written; the directory entries too, before the version is switched to
    for directory in sorted(written_dirs, key=lambda d: len(d.parts), reverse=True):
        fsync_dir(directory)
    return Extracted(files, links, total)


def _check_parent(dest: Path, target: Path, what: str, name: str) -> None:
    real_dest = os.path.realpath(dest)
    real_parent = os.path.realpath(target.parent)
    if real_parent != real_dest and not real_parent.startswith(real_dest + os.sep):
        raise IntegrityError(f"{what}: archive member {name!r} resolves outside the version directory")


def _refuse_symlink(target: Path, what: str, name: str) -> None:
    if target.is_symlink():
        raise IntegrityError(f"{what}: archive member {name!r} would write through a symlink")


def _remove_existing(target: Path, what: str, name: str) -> None:
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        raise IntegrityError(f"{what}: archive member {name!r} replaces a directory")


def _write(source: object, target: Path, size: int, what: str, name: str) -> str:
    _refuse_symlink(target, what, name)
    if target.exists():
        _remove_existing(target, what, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    written = 0
    with os.fdopen(fd, "wb") as out:
        read = source.read  # type: ignore[attr-defined]
        while block := read(_CHUNK):
            written += len(block)
            if written > size:
                raise IntegrityError(f"{what}: archive member {name!r} is longer than its header says")
            out.write(block)
            hasher.update(block)
        out.flush()
        os.fsync(out.fileno())  # a power cut after the switch must not find an empty file
    return "sha256:" + hasher.hexdigest()
