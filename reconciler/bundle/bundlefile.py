"""The bundle file itself: a POSIX tar, optionally zstd-compressed, written and read in one pass.

Neither side holds a member in memory: the device reads a multi-GiB bundle front to back with a bounded
buffer (a plain tar through a seekable file, a zstd one as a stream), and compression (``--zstd``, the optional ``zstandard`` package)
changes nothing else.  Writing goes to a temp file next to the target, fsynced and renamed: a medium pulled
out mid-write holds the old file or none, never half of a new one.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from reconciler.durable import fsync_dir
from reconciler.errors import IntegrityError, NotFound, UsageError

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BUFFER = 1024 * 1024


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise UsageError("zstd bundles need the zstandard package: pip install 'edge-reconciler[zstd]'") from None
    return zstandard


@contextlib.contextmanager
def writer(path: Path, *, zstd: bool = False) -> Iterator[tarfile.TarFile]:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            out: IO[bytes] = raw
            compressor = None
            if zstd:
                compressor = _zstandard().ZstdCompressor(level=3, threads=-1).stream_writer(raw, closefd=False)
                out = compressor
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=BUFFER) as tar:
                yield tar
            if compressor is not None:
                compressor.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
    with open(path, "rb") as f:
        tar.addfile(info, f)


@contextlib.contextmanager
def reader(path: Path) -> Iterator[tarfile.TarFile]:
    """The bundle's members in order; tar or zstd errors (a truncated or foreign file) as IntegrityError."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, after the stream that wraps it
    except FileNotFoundError:
        raise NotFound(f"{path}: no such bundle") from None
    except OSError as exc:
        raise NotFound(f"{path}: cannot read the bundle: {exc.strerror}") from None
    with raw:
        compressed = raw.read(4) == ZSTD_MAGIC
        raw.seek(0)
        try:
            if compressed:
                stream = _zstandard().ZstdDecompressor().stream_reader(raw, read_size=BUFFER, closefd=False)
                with tarfile.open(fileobj=stream, mode="r|", bufsize=BUFFER) as tar:
                    yield tar
            else:
                # seekable: members are read straight from the file (tarfile's stream mode copies every
                # byte through its own buffer, which cost more than the sha256 of the blobs)
                with tarfile.open(fileobj=raw, mode="r:") as tar:
                    yield tar
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            if isinstance(exc, OSError) and not _is_decode_error(exc):
                raise
            raise IntegrityError(f"{path}: truncated or not a bundle ({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # zstandard.ZstdError: a damaged frame
            if type(exc).__name__ != "ZstdError":
                raise
            raise IntegrityError(f"{path}: damaged zstd stream ({exc})") from None


def _is_decode_error(exc: OSError) -> bool:
    # tarfile raises ReadError (a TarError) for damage; a bare OSError with no errno comes from decoders
    return exc.errno is None
