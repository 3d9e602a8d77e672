"""Writes that survive a power cut: a reader finds the old file or the new one, never half of either.

Standard library only: the per-workload supervisor imports it too and must start light.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.errors import DiskFull

_FULL = (errno.ENOSPC, errno.EDQUOT)

_SYNC_FILE_RANGE_WRITE = 2
_libc: Any = None


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes at ``offset`` of ``fd`` to disk now, without waiting for it.

    Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, as RocksDB's ``bytes_per_sync`` uses it: called
    every few MiB while a large file streams in, it leaves the final fsync little to do and keeps dirty
    pages from piling up on a small device.  It promises nothing about durability (the fsync still does
    that) and is a no-op where the call does not exist."""
    global _libc
    if _libc is None:
        import ctypes  # only blob downloads need it; the supervisor imports this module and starts light

        libc = ctypes.CDLL(None, use_errno=True)
        function = getattr(libc, "sync_file_range", None)
        if function is not None:
            function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            function.restype = ctypes.c_int
        _libc = function or False
    if _libc:
        _libc(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


@contextlib.contextmanager
def disk_full_as_waiting(path: Path | str) -> Iterator[None]:
    """ENOSPC or EDQUOT in the block becomes ``DiskFull`` naming ``path``: retried later, never a crash."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _FULL:
            raise DiskFull(f"{path}: no space left on device ({os.strerror(exc.errno or 0)})") from None
        raise


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Temp file in the same directory, fsync, rename over ``path``, fsync the directory.  A full disk is
    ``DiskFull`` and leaves the old file as it was."""
    with disk_full_as_waiting(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)
