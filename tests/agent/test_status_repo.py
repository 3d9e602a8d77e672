"""statusRepo: status branches in a repository of their own, read back by ``status`` and ``history``."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from reconciler.main import main
from tests.agentlab import Lab
from tests.fleetutil import git
from tests.scalelab import artifacts, lab

__all__ = ["artifacts", "lab"]  # fixtures
pytestmark = pytest.mark.integration


def test_status_goes_to_the_status_repo_and_the_views_read_it_there(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    status_repo = lab.root / "status.git"
    subprocess.run(["git", "init", "-q", "--bare", str(status_repo)], check=True)
    lab.config_path(statusRepo={"url": f"file://{status_repo}"})
    assert main(["agent", "--config", str(lab.root / "agent-dev1.yaml"), "--once"]) == 0
    doc = yaml.safe_load(git(status_repo, "show", "refs/heads/status/dev1:status.yaml"))
    assert doc["phase"] == "Ready" and doc["appliedCommit"] == git(lab.server, "rev-parse", "main")
    assert git(lab.server, "for-each-ref", "refs/heads/status/") == ""  # the fleet repo keeps its few refs

    capsys.readouterr()
    assert main(["status", "--repo", str(lab.server), "--status-repo", str(status_repo), "--format", "json"]) == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)["devices"]}
    assert rows["dev1"]["convergence"] == "converged" and rows["dev1"]["phase"] == "Ready"
    assert rows["dev2"]["neverSeen"] is True
    assert main(["status", "--repo", str(lab.server), "--format", "json"]) == 0  # without it: never seen
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)["devices"]}
    assert rows["dev1"]["neverSeen"] is True

    assert main(["history", "--device", "dev1", "--repo", str(lab.server), "--status-repo", str(status_repo)]) == 0
    out = capsys.readouterr().out
    assert "observed" in out and "dev1" in out, out

    # a device that lost its data dir continues its chain in the status repo: never a rewind
    first = git(status_repo, "rev-parse", "refs/heads/status/dev1")
    shutil.rmtree(lab.data_dir)
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "to 2.0")
    assert main(["agent", "--config", str(lab.root / "agent-dev1.yaml"), "--once"]) == 0
    tip = git(status_repo, "rev-parse", "refs/heads/status/dev1")
    assert tip != first
    subprocess.run(["git", "-C", str(status_repo), "merge-base", "--is-ancestor", first, tip], check=True)
    assert yaml.safe_load(git(status_repo, "show", f"{tip}:status.yaml"))["models"][0]["version"] == "2.0"


def test_status_repo_in_the_agent_configuration_is_checked(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    path = lab.config_path(statusRepo={"sshKey": "/k"})
    assert main(["agent", "--config", str(path), "--once"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "statusRepo" in err and "url" in err, err
