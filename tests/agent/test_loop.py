"""The device agent end to end: a real registry, a real git repository, real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.main import main
from tests.agentlab import Lab, counter_registry, running_lab
from tests.fleetutil import git

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    with counter_registry(tmp_path_factory.mktemp("registry"), ("1.0", "2.0", "3.0"), 1000) as found:
        yield found


@pytest.fixture
def lab(tmp_path: Path, artifacts: tuple[str, dict[str, str]]) -> Iterator[Lab]:
    with running_lab(tmp_path, artifacts, tmp_path / "data-dev2") as lab:
        yield lab


def wait_healthy(lab: Lab, seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if lab.get("/healthz")[0] == 200:
            return True
        time.sleep(0.1)
    return False


def model_state(lab: Lab) -> dict[str, object]:
    models = lab.status()["models"]
    assert isinstance(models, list) and len(models) == 1
    return dict(models[0])


def test_first_deploy_upgrade_downgrade_and_status(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.run() == 0
    assert lab.get("/healthz")[0] == 200
    status = lab.status()
    assert status["phase"] == "Ready" and status["device"] == "dev1"
    head = git(lab.server, "rev-parse", "main")
    assert status["appliedCommit"] == head and status["observedCommit"] == head
    m = model_state(lab)
    assert m["version"] == "1.0" and m["state"] == "running"
    assert m["digest"] == lab.refs["1.0"].split("@")[1]
    perf = m["performance"]
    assert isinstance(perf, dict) and perf["startSeconds"] > 0 and perf["memoryBytes"] > 0
    assert status["detectors"] == [{"detector_id": "det_a00000000000000000000000000", "model": "counter", "version": "1.0", "state": "active"}]
    det = yaml.safe_load((lab.data_dir / "detectors.yaml").read_text())
    assert det["detectors"][0]["detector_id"] == "det_a00000000000000000000000000"
    assert det["detectors"][0]["always_return_edge_prediction"] is False
    assert "min_time_between_escalations" not in det["detectors"][0]
    # the status branch is authored by the device and shares no history with main
    assert git(lab.server, "log", "-1", "--format=%an", "refs/heads/status/dev1") == "dev1"
    assert git(lab.server, "ls-tree", "--name-only", "refs/heads/status/dev1") == "status.yaml"

    lab.commit({"groups/all.yaml": lab.group_yaml("2.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}])}, "upgrade")
    assert lab.run() == 0
    assert json.loads(lab.get("/healthz")[1])["version"] == "2.0"
    assert model_state(lab)["version"] == "2.0"
    assert len(list((lab.data_dir / "process").iterdir())) == 1  # the old version is gone

    lab.commit({"groups/all.yaml": lab.group_yaml("1.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}])}, "downgrade")
    assert lab.run() == 0
    assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"
    # the status branch is the audit log: one commit per change, each parent the previous
    log = git(lab.server, "log", "--format=%s", "refs/heads/status/dev1").splitlines()
    assert len(log) == 3 and all(line.startswith("Ready") for line in log)


def test_nothing_changed_means_no_work_and_no_status_commit(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.run() == 0
    commits = lab.status_commits()
    state_before = (lab.data_dir / "state.json").read_text()
    # a commit that does not concern dev1 (another device's file)
    lab.commit({"devices/dev2.yaml": "apiVersion: fleet/v1\nkind: Device\nmetadata: {name: dev2, labels: {a: b}}\n"
                                      "spec: {}\n"}, "dev2 only")
    assert lab.run() == 0
    assert lab.status_commits() == commits
    head = git(lab.server, "rev-parse", "main")
    state = json.loads((lab.data_dir / "state.json").read_text())
    assert state["observedCommit"] == head != json.loads(state_before)["appliedCommit"]  # it did look
    assert state["appliedCommit"] == head  # and nothing in it concerned dev1
    # the operator's view: converged, though the last status commit names the older fleet commit
    capsys.readouterr()
    assert main(["status", "--repo", str(lab.server), "--format", "json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["devices"] if r["device"] == "dev1")
    assert row["convergence"] == "converged", row


def test_invalid_commit_is_never_applied(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.run() == 0
    lab.commit({"groups/all.yaml": lab.group_yaml("9.9")}, "pin a version that does not exist")
    assert lab.run() == 1
    status = lab.status()
    assert status["phase"] == "Failed"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ValidationFailed" and "has no version '9.9'" in ready["message"]
    assert model_state(lab)["version"] == "1.0" and lab.get("/healthz")[0] == 200
    assert status["appliedCommit"] != status["observedCommit"]


def test_failed_health_check_rolls_back(lab: Lab) -> None:
    assert lab.run() == 0
    versions = {"1.0": {}, "2.0": {}, "3.0": {"env": {"FAIL_HEALTH": "1"}}}
    lab.commit({"models/counter.yaml": lab.model_yaml(versions), "groups/all.yaml": lab.group_yaml("3.0")}, "bad")
    assert lab.run() == 1
    status = lab.status()
    assert status["phase"] == "Degraded"
    m = model_state(lab)
    assert m["state"] == "rolledBack" and m["version"] == "1.0" and m["desiredVersion"] == "3.0"
    assert "3.0" in str(m["lastError"]) and "exited with code 3" in str(m["lastError"])
    assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"
    # not retried in a loop for the same desired state, and still reported
    assert lab.run() == 1
    assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"
    # a new commit that fixes it applies
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "fix")
    assert lab.run() == 0 and json.loads(lab.get("/healthz")[1])["version"] == "2.0"


def test_removing_a_model_stops_it_and_crashes_are_repaired(lab: Lab) -> None:
    assert lab.run() == 0
    state = json.loads(next((lab.data_dir / "process").iterdir()).joinpath("state.json").read_text())
    os.kill(int(state["supervisorPid"]), signal.SIGKILL)  # the workload dies with its supervisor gone
    os.kill(int(state["childPid"]), signal.SIGKILL)
    time.sleep(0.3)
    assert lab.run() == 0
    assert lab.get("/healthz")[0] == 200
    assert lab.status()["drift"], lab.status()
    lab.commit({"groups/all.yaml": lab.group_yaml(None)}, "remove counter")
    assert lab.run() == 0
    assert lab.get("/healthz")[0] == 0
    assert lab.status()["models"] == []


def test_detector_change_signals_the_workload(lab: Lab) -> None:
    versions = {v: {"reload": "signal"} for v in lab.refs}
    lab.commit({"models/counter.yaml": lab.model_yaml(versions)}, "reload by signal")
    assert lab.run() == 0
    before = json.loads(lab.get("/detectors")[1])
    assert before["detectors"] == ["det_a00000000000000000000000000"]
    lab.commit({"groups/all.yaml": lab.group_yaml("1.0", [
        {"detector_id": "det_a00000000000000000000000000", "model": "counter"},
        {"detector_id": "det_b00000000000000000000000000", "model": "counter", "always_return_edge_prediction": True,
         "min_time_between_escalations": 5}])}, "add detector")
    assert lab.run() == 0
    time.sleep(0.3)
    after = json.loads(lab.get("/detectors")[1])
    assert after["detectors"] == ["det_a00000000000000000000000000", "det_b00000000000000000000000000"] and after["reloads"] == before["reloads"] + 1
    det = yaml.safe_load((lab.data_dir / "detectors.yaml").read_text())["detectors"]
    assert det[1]["min_time_between_escalations"] == 5


def test_detector_change_restarts_a_workload_without_reload_signal(lab: Lab) -> None:
    assert lab.run() == 0
    before = json.loads(lab.get("/detectors")[1])
    assert before["detectors"] == ["det_a00000000000000000000000000"]
    lab.commit({"groups/all.yaml": lab.group_yaml("1.0", [
        {"detector_id": "det_a00000000000000000000000000", "model": "counter"},
        {"detector_id": "det_b00000000000000000000000000", "model": "counter"}])}, "add detector")
    assert lab.run() == 0
    after = json.loads(lab.get("/detectors")[1])
    assert after["detectors"] == ["det_a00000000000000000000000000", "det_b00000000000000000000000000"]
    assert after["pid"] != before["pid"] and after["reloads"] == 1  # a new process read the new file
    assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"


def test_rewind_is_refused(lab: Lab) -> None:
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
    assert lab.run() == 0
    git(lab.server, "update-ref", "refs/heads/main", "main~1")  # someone force-pushed main back
    assert lab.run() == 1
    ready = next(c for c in lab.status()["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "NonFastForward"
    assert json.loads(lab.get("/healthz")[1])["version"] == "2.0"


def test_offline_cycle_completes_and_status_is_pushed_later(lab: Lab) -> None:
    assert lab.run() == 0
    pushed = lab.status_commits()
    moved = lab.root / "server-away.git"
    lab.server.rename(moved)
    try:
        state = json.loads(next((lab.data_dir / "process").iterdir()).joinpath("state.json").read_text())
        os.kill(int(state["childPid"]), signal.SIGKILL)  # something to report while offline
        time.sleep(0.3)
        assert lab.run() == 0  # offline: still reconciles what it applied
        assert wait_healthy(lab)
    finally:
        moved.rename(lab.server)
    assert lab.status_commits() == pushed
    assert lab.run() == 0
    assert lab.status_commits() > pushed
    log = git(lab.server, "log", "--format=%s", "refs/heads/status/dev1").splitlines()
    assert len(log) >= pushed + 1


def test_second_agent_on_same_data_dir_is_refused(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.agent.loop import single_instance

    lab.data_dir.mkdir(parents=True, exist_ok=True)
    with single_instance(lab.data_dir):
        assert lab.run() == 1
    assert "another agent is running" in capsys.readouterr().err


def test_bad_agent_config_is_located(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    path = lab.root / "bad.yaml"
    path.write_text("device: dev1\nrepo: {url: x}\ndataDir: d\ninterval: soon\n")
    assert main(["agent", "--config", str(path), "--once"]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4:1: error: expected a number" in err and "Traceback" not in err


def test_kill_9_mid_deploy_then_restart_converges(lab: Lab) -> None:
    assert lab.run() == 0
    slow = {"1.0": {}, "2.0": {"health": {"path": "/healthz", "timeout": 10}, "command": [
        "sh", "-c", "sleep 3; exec python3 \"$MODEL_DIR/serve.py\" --port " + str(lab.port)]}, "3.0": {}}
    lab.commit({"models/counter.yaml": lab.model_yaml(slow), "groups/all.yaml": lab.group_yaml("2.0")}, "slow start")
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "--config", str(lab.config_path()), "--once"],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:  # wait until the new version's workload exists, then cut the power
        dirs = list((lab.data_dir / "process").glob("dev1--counter--2.0--*"))
        if dirs:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lab.run() == 0
    dirs = sorted(p.name for p in (lab.data_dir / "process").iterdir() if not p.name.startswith("."))
    assert len(dirs) == 1 and "--2.0--" in dirs[0], dirs
    assert json.loads(lab.get("/healthz")[1])["version"] == "2.0"


def _serves(lab: Lab, version: str, seconds: float) -> bool:
    """Wait until the workload answers /healthz with ``version``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        status, body = lab.get("/healthz")
        if status == 200 and json.loads(body)["version"] == version:
            return True
        time.sleep(0.2)
    return False


def test_loop_reacts_at_once_to_a_commit_and_a_config_edit_and_stops_cleanly_on_sigterm(lab: Lab) -> None:
    config = lab.config_path(interval=300, jitter=0)  # the interval alone would wait five minutes
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_healthy(lab, 30)
        assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"
        time.sleep(1.0)  # let the watcher start
        lab.commit({"groups/all.yaml": lab.group_yaml("2.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}])},
                   "upgrade")
        assert _serves(lab, "2.0", 30), "the loop did not pick up the commit on the watched repository"
        # An edit of the config file that does not load is refused; the agent keeps running as it was.
        config.write_text("device: [dev1\n")
        time.sleep(1.5)
        assert proc.poll() is None
        # A valid edit takes effect at once: follow a canary branch that pins 1.0 again.
        git(lab.work, "checkout", "-qb", "canary")
        (lab.work / "groups" / "all.yaml").write_text(
            lab.group_yaml("1.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}]))
        git(lab.work, "commit", "-qam", "canary back to 1.0")
        git(lab.work, "push", "-q", "origin", "canary")
        lab.config_path(interval=300, jitter=0, repo={"url": str(lab.server), "branch": "canary"})
        assert _serves(lab, "1.0", 30), "the loop did not take up the edited configuration"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "keeping the configuration loaded before" in err and ":1:" in err  # located, as validate does
    # workloads keep running after the agent stops, and its state was saved
    assert json.loads(lab.get("/healthz")[1])["version"] == "1.0"
    state = json.loads((lab.data_dir / "state.json").read_text())
    assert state["appliedCommit"] == git(lab.server, "rev-parse", "canary")
