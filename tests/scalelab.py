"""Shared by the fleet-scale tests: a registry with the lab's artifacts (module scope), a lab whose workloads are
stopped at the end, and what a device's data dir looked like (to prove a cycle wrote nothing)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent import config as agentconfig
from reconciler.agent.reconcile import Reconciler
from tests.agentlab import Lab, counter_registry, running_lab


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with counter_registry(tmp_path_factory.mktemp("registry"), ("1.0", "2.0"), 100) as found:
        yield found


@pytest.fixture
def lab(tmp_path: Path, artifacts: tuple[str, dict[str, str]]) -> Iterator[Lab]:
    with running_lab(tmp_path, artifacts, tmp_path / "data-dev2") as lab:
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
