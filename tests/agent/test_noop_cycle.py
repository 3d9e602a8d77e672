"""A cycle in which nothing changed writes nothing to the device's disk (flash wear on edge storage)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from reconciler.agent.state import STATE_FILE, AgentState
from tests.agentlab import Lab
from tests.scalelab import artifacts, lab, reconciler, snapshot

__all__ = ["artifacts", "lab"]  # fixtures


@pytest.mark.integration
def test_a_no_op_cycle_writes_nothing_in_the_data_dir(lab: Lab) -> None:
    agent = reconciler(lab)
    assert agent.run_once().ready
    assert agent.run_once().ready  # the first pass after the deploy records the samples it took
    before = snapshot(lab.data_dir)
    time.sleep(0.02)  # a rewrite would show as a new mtime
    cycle = agent.run_once()
    assert cycle.ready and not cycle.did_work
    after = snapshot(lab.data_dir)
    assert {p: v for p, v in after.items() if before.get(p) != v} == {}
    assert not (lab.data_dir / "fleet.git" / "FETCH_HEAD").is_symlink()
    # and it did look: a new commit is still picked up by the next cycle
    tip = lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "to 2.0")
    assert agent.run_once().ready
    assert json.loads((lab.data_dir / STATE_FILE).read_text())["appliedCommit"] == tip


def test_state_is_rewritten_only_when_more_than_the_samples_changed(tmp_path: Path) -> None:
    state = AgentState(models={"m": {"version": "1", "performance": {"cpuPercent": 1.0, "pullSeconds": 0.5}}})
    state.save(tmp_path)
    inode = (tmp_path / STATE_FILE).stat().st_ino
    state.models["m"]["performance"]["cpuPercent"] = 37.5
    state.save(tmp_path)
    assert (tmp_path / STATE_FILE).stat().st_ino == inode  # a new CPU sample alone: not written
    loaded = AgentState.load(tmp_path)
    loaded.models["m"]["performance"]["memoryBytes"] = 1 << 20
    loaded.save(tmp_path)
    assert (tmp_path / STATE_FILE).stat().st_ino == inode  # nor after a restart
    loaded.applied_commit = "a" * 40
    loaded.save(tmp_path)
    assert (tmp_path / STATE_FILE).stat().st_ino != inode
    assert AgentState.load(tmp_path).applied_commit == "a" * 40
    (tmp_path / STATE_FILE).unlink()
    loaded.save(tmp_path)  # a deleted file is written again even though nothing changed
    assert AgentState.load(tmp_path).applied_commit == "a" * 40
