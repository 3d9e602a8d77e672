"""Scenario 20 (malicious archives): a gzip bomb and a sparse entry are refused before the cap is written past;
scenario 13 (power cut): extracted files are fsynced before the version is switched to."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from reconciler.artifacts.archive import extract
from reconciler.errors import IntegrityError


def sparse_tar(path: Path, real_size: int) -> Path:
    """A GNU sparse entry ('S') whose header says ``real_size`` bytes and that carries none: 1.5 KB on disk."""
    info = tarfile.TarInfo("huge.bin")
    info.type = tarfile.GNUTYPE_SPARSE
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[483:495] = f"{real_size:011o}\0".encode()  # realsize
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header[:512]):06o}\0 ".encode()
    path.write_bytes(bytes(header[:512]) + b"\0" * 1024)
    return path


def test_scenario_20_sparse_entry_is_refused(tmp_path: Path) -> None:
    archive = sparse_tar(tmp_path / "sparse.tar", 1024**3)
    with tarfile.open(archive) as t:  # Python's tar reader sees a 1 GiB sparse file in it
        assert t.getmembers()[0].issparse()
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=r"'huge\.bin' is a sparse file: refused"):
        extract(archive, out, compression="tar", max_bytes=16 * 1024**3, what="layer")
    assert list(out.iterdir()) == []


def test_scenario_20_gzip_bomb_is_refused_at_the_ratio_cap_without_writing_past_it(
        registry: object, tmp_path: Path) -> None:
    from reconciler.artifacts.registry import RegistryClient
    from reconciler.artifacts.store import ArtifactStore
    from reconciler.main import main

    bomb = tmp_path / "bomb"
    bomb.mkdir()
    zeros = 64 * 1024**2
    with open(bomb / "zeros.bin", "wb") as f:  # 64 MiB of zeros: about 64 KiB as tar+gzip (ratio ~1000)
        f.truncate(zeros)
    address = registry.address  # type: ignore[attr-defined]
    assert main(["publish", str(bomb), "--to", f"{address}/models/bomb:v1"]) == 0
    store = ArtifactStore(tmp_path / "d")
    with pytest.raises(IntegrityError, match="archive expands beyond the cap"):
        store.pull(f"{address}/models/bomb:v1", RegistryClient(None, None), model="bomb", version="1")
    assert store.activated("bomb", "1") is None
    written = sum(p.stat().st_size for p in (tmp_path / "d" / "models").rglob("*") if p.is_file())
    assert written == 0  # refused from the header, before its content was written
    store.max_extract_ratio = 0  # the operator's choice: no ratio cap, the absolute cap only
    result = store.pull(f"{address}/models/bomb:v1", RegistryClient(None, None), model="bomb", version="1")
    assert (result.path / "bomb" / "zeros.bin").stat().st_size == zeros or \
        (result.path / "zeros.bin").stat().st_size == zeros


def test_scenario_13_extracted_files_and_directories_are_fsynced(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name in ("a/b/model.bin", "a/run.py"):
            info = tarfile.TarInfo(name)
            info.size = 5
            t.addfile(info, io.BytesIO(b"hello"))
    (tmp_path / "l.tgz").write_bytes(buf.getvalue())
    synced: list[str] = []
    real = os.fsync

    def record(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    out = tmp_path / "out"
    out.mkdir()
    extract(tmp_path / "l.tgz", out, compression="tar+gzip", max_bytes=1000, what="layer")
    assert {str(out / "a/b/model.bin"), str(out / "a/run.py"), str(out / "a/b"), str(out / "a"), str(out)} \
        <= set(synced)
