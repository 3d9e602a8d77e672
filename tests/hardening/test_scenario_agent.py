"""Agent scenarios on a real registry, a real git repository and real processes: rewinds without the mirror
(9), a full disk at every write (14), any exception in a pass (the loop survives), and clocks set back (22)."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from reconciler.agent import config as agentconfig
from reconciler.agent.loop import Agent
from tests.agentlab import Lab
from tests.fleetutil import git
from tests.hardening.conftest import fill, small_disk

pytestmark = pytest.mark.integration


def serving(lab: Lab) -> str | None:
    code, body = lab.get("/healthz")
    return str(json.loads(body)["version"]) if code == 200 else None


def wait_serving(lab: Lab, version: str, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if serving(lab) == version:
            return True
        time.sleep(0.1)
    return False


def ready(lab: Lab) -> dict[str, str]:
    return next(c for c in lab.status()["conditions"] if c["type"] == "Ready")  # type: ignore[union-attr,index]


def test_scenario_09_force_pushed_older_main_is_refused_after_the_mirror_is_lost(lab: Lab) -> None:
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
    assert lab.run() == 0 and wait_serving(lab, "2.0")
    applied = json.loads((lab.data_dir / "state.json").read_text())["appliedCommit"]
    shutil.rmtree(lab.data_dir / "fleet.git")  # the bare mirror is gone, state.json is kept
    git(lab.server, "update-ref", "refs/heads/main", "main~1")  # and main was force-pushed back
    assert lab.run() == 1
    assert ready(lab)["reason"] == "NonFastForward"
    assert "does not contain the applied commit" in ready(lab)["message"]
    assert serving(lab) == "2.0"
    assert json.loads((lab.data_dir / "state.json").read_text())["appliedCommit"] == applied


def test_scenario_14_disk_full_at_status_commit_and_state_save_is_retried_not_fatal(
        lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    with small_disk(lab.data_dir, "128m"):
        assert lab.run() == 0 and wait_serving(lab, "1.0")
        before = (lab.data_dir / "state.json").read_text()
        lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
        filler = fill(lab.data_dir)
        capsys.readouterr()
        assert lab.run() == 1  # nothing fits: fetch, status commit and state save all fail
        err = capsys.readouterr().err
        assert "internal error" not in err and "Traceback" not in err
        assert (lab.data_dir / "state.json").read_text() == before  # the old state, whole
        assert serving(lab) == "1.0"  # what ran keeps running
        filler.unlink()
        assert lab.run() == 0 and wait_serving(lab, "2.0")
        assert lab.status()["phase"] == "Ready"


def test_scenario_14_state_save_on_a_full_disk_is_disk_full_naming_the_path(tmp_path: Path) -> None:
    from reconciler.agent.state import AgentState
    from reconciler.errors import DiskFull

    with small_disk(tmp_path / "d", "1m") as d:
        AgentState(applied_commit="a" * 40).save(d)
        fill(d)
        with pytest.raises(DiskFull, match=f"{d}/state.json: no space left on device"):
            AgentState(applied_commit="b" * 40, models={"m": {"x": "y" * 100_000}}).save(d)
        assert AgentState.load(d).applied_commit == "a" * 40
        assert [p.name for p in d.iterdir()] == ["state.json", "filler"] or \
            sorted(p.name for p in d.iterdir()) == ["filler", "state.json"]


def test_loop_survives_any_exception_from_a_pass_reports_it_and_backs_off(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    agent = Agent(agentconfig.load(lab.config_path()))
    assert agent.run_pass().ready

    def exhausted(cycle: object) -> None:
        raise MemoryError("cannot allocate")

    agent.reconciler.pull = exhausted  # type: ignore[method-assign]
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
    with caplog.at_level(logging.ERROR, logger="reconciler.agent"):
        cycle = agent.run_pass()
    assert type(cycle.error).__name__ == "Unexpected" and "MemoryError" in str(cycle.error)
    assert any(r.exc_info for r in caplog.records)  # the traceback is in the log
    assert ready(lab)["reason"] == "InternalError"
    assert agent.next_wait(cycle) < 10  # backs off (5 s first), not the interval and not the end of the loop
    assert serving(lab) == "1.0"
    del agent.reconciler.pull
    assert agent.run_pass().ready and wait_serving(lab, "2.0")


def test_scenario_22_clock_set_back_does_not_stop_heartbeats(lab: Lab) -> None:
    lab.commit({"fleet.yaml": (lab.work / "fleet.yaml").read_text().replace("heartbeatInterval: 1h",
                                                                             "heartbeatInterval: 1s")})
    assert lab.run() == 0
    state_path = lab.data_dir / "state.json"
    state = json.loads(state_path.read_text())
    state["lastStatusCommit"] = time.time() + 86400 * 365  # the last commit was made with a clock a year ahead
    state_path.write_text(json.dumps(state))
    commits = lab.status_commits()
    assert lab.run() == 0
    assert lab.status_commits() == commits + 1  # a heartbeat, though the wall clock now reads "earlier"


def test_scenario_19_status_branch_rewritten_remotely_is_continued_not_overwritten(lab: Lab) -> None:
    assert lab.run() == 0
    work = lab.root / "rewrite"
    git(lab.root, "clone", "-q", "-b", "status/dev1", str(lab.server), str(work))
    git(work, "checkout", "-q", "--orphan", "rewritten")
    (work / "status.yaml").write_text("device: dev1\nphase: Unknown\n")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "rewritten by someone")
    git(work, "push", "-q", "--force", "origin", "rewritten:status/dev1")
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
    assert lab.run() == 0 and wait_serving(lab, "2.0")
    log = git(lab.server, "log", "--format=%s", "refs/heads/status/dev1").splitlines()
    assert log[-1] == "rewritten by someone"  # what the server holds was kept, not force-pushed over
    assert lab.status()["phase"] == "Ready" and len(log) >= 2
