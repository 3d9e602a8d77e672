"""Shared by the fleet-scale tests: a registry with the lab's artifacts (module scope), a lab whose workloads are
stopped at the end, and what a device's data dir looked like (to prove a cycle wrote nothing)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent import config as agentconfig
from reconciler.agent.reconcile import Reconciler
from tests.agentlab import Lab, publish, stop_workloads
from tests.services.registry import run_registry


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        refs = {v: publish(reg.address, work, "models/counter", v, f"weights {v}".encode() * 100)
                for v in ("1.0", "2.0")}
        yield reg.address, refs


@pytest.fixture
def lab(tmp_path: Path, artifacts: tuple[str, dict[str, str]]) -> Iterator[Lab]:
    address, refs = artifacts
    lab = Lab(tmp_path, address, refs)
    lab.setup()
    with stop_workloads(lab.data_dir, tmp_path / "data-dev2"):
        yield lab


def reconciler(lab: Lab, device: str | None = None, **extra: object) -> Reconciler:
    """The device's Reconciler, configured like ``agent --config`` would be (with ``extra`` settings)."""
    return Reconciler(agentconfig.load(lab.config_path(device, **extra)))


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (mtime ns, size, inode) of everything under ``root``, symlinks not followed."""
    out = {}
    for path in root.rglob("*"):
        st = os.lstat(path)
        out[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size, st.st_ino)
    return out
