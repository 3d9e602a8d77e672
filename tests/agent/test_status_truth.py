"""Status that tells the truth (real registry, real git repository, real processes): a failed pull is listed,
no AllHealthy while a desired model does not run, commit messages that say what changed, queued counts that
agree, a working-tree repo.url refused at load, ``status --device`` and ``history --since`` forms."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pygit2
import pytest
import yaml

from reconciler.main import main
from reconciler.views.options import parse_since
from tests.agentlab import Lab, publish, running_lab
from tests.fleetutil import git
from tests.services.registry import run_registry

MISSING = "sha256:" + "0" * 64


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        refs = {v: publish(reg.address, work, "models/counter", v, f"weights {v}".encode() * 100) for v in ("1.0", "2.0")}
        refs["9.0"] = refs["1.0"].split("@")[0] + "@" + MISSING  # never published
        yield reg.address, refs


@pytest.fixture
def lab(tmp_path: Path, artifacts: tuple[str, dict[str, str]]) -> Iterator[Lab]:
    with running_lab(tmp_path, artifacts) as lab:
        yield lab


def messages(lab: Lab) -> list[str]:
    repo = pygit2.Repository(str(lab.server))
    tip = repo.references[f"refs/heads/status/{lab.device}"].target
    return [c.message for c in repo.walk(tip)]


def conditions(lab: Lab) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in lab.status()["conditions"]}  # type: ignore[attr-defined]


@pytest.mark.integration
def test_failed_pull_lists_the_model_and_is_never_all_healthy(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    lab.commit({"groups/all.yaml": lab.group_yaml("9.0")}, "pin a version whose artifact is missing")
    assert lab.run() == 1
    out = capsys.readouterr().out
    assert "None" not in out and "applied nothing yet" in out and "counter 9.0 failed" in out
    model = lab.status()["models"][0]  # type: ignore[index]
    assert (model["name"], model["version"], model["state"]) == ("counter", "9.0", "failed")
    assert "version 9.0: pull failed" in model["lastError"] and MISSING[:20] in model["lastError"]
    degraded = conditions(lab)["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] != "AllHealthy"
    assert "counter: version 9.0: pull failed" in degraded["message"]


@pytest.mark.integration
def test_failed_pull_of_an_upgrade_keeps_the_running_version_listed(lab: Lab) -> None:
    assert lab.run() == 0
    lab.commit({"groups/all.yaml": lab.group_yaml("9.0")}, "upgrade to a missing artifact")
    assert lab.run() == 1
    model = lab.status()["models"][0]  # type: ignore[index]
    assert (model["version"], model["desiredVersion"], model["state"]) == ("1.0", "9.0", "running")
    assert "version 9.0: pull failed" in model["lastError"]
    assert conditions(lab)["Degraded"]["status"] == "True" and lab.status()["phase"] != "Ready"


@pytest.mark.integration
def test_status_commit_messages_say_what_changed(lab: Lab) -> None:
    first = git(lab.work, "rev-parse", "HEAD")
    assert lab.run() == 0
    second = lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
    assert lab.run() == 0
    third = lab.commit({"groups/all.yaml": lab.group_yaml("1.0")}, "downgrade")
    assert lab.run() == 0
    newest_first = messages(lab)
    assert newest_first == [
        f"Ready: fleet {third[:7]}; counter 2.0 -> 1.0\n\nFleet-Commit: {third}\n",
        f"Ready: fleet {second[:7]}; counter 1.0 -> 2.0\n\nFleet-Commit: {second}\n",
        f"Ready: fleet {first[:7]}; +counter 1.0\n\nFleet-Commit: {first}\n",
    ]
    # a heartbeat that changes nothing says so
    fleet = yaml.safe_load((lab.work / "fleet.yaml").read_text())
    fleet["spec"]["status"]["heartbeatInterval"] = 0
    fourth = lab.commit({"fleet.yaml": yaml.safe_dump(fleet)}, "heartbeat at every cycle")
    assert lab.run() == 0
    assert messages(lab)[0] == f"heartbeat\n\nFleet-Commit: {fourth}\n"
    # git log alone answers "what changed when"
    log = git(lab.server, "log", "--format=%s", f"refs/heads/status/{lab.device}")
    assert "counter 1.0 -> 2.0" in log


@pytest.mark.integration
def test_queued_counts_agree_in_state_and_status(lab: Lab) -> None:
    assert lab.run() == 0
    hidden = lab.root / "server-away.git"
    os.rename(lab.server, hidden)  # the server is gone: fetch and push fail
    try:
        lab.config_path()  # unchanged configuration
        assert lab.run() == 0  # Connected False: a status commit, queued
        for spec in (lab.data_dir / "process").iterdir():  # something else to report while offline
            state = json.loads((spec / "state.json").read_text())
            os.kill(int(state["childPid"]), 9)
        assert lab.run() == 0
    finally:
        os.rename(hidden, lab.server)
    saved = json.loads((lab.data_dir / "state.json").read_text())
    local = pygit2.Repository(str(lab.data_dir / "fleet.git"))
    tip = local.references[f"refs/heads/status/{lab.device}"].peel(pygit2.Commit)
    doc = yaml.safe_load(local[tip.tree["status.yaml"].id].data)
    assert saved["pushError"].startswith("offline, 2 queued")
    assert doc["push"]["pending"] == 2


@pytest.mark.integration
def test_working_tree_repo_url_fails_at_config_load(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    config = lab.root / "agent-worktree.yaml"
    config.write_text(f"device: dev1\nrepo:\n  url: {lab.work}\ndataDir: {lab.data_dir}\n")
    assert main(["agent", "--config", str(config), "--once"]) == 1
    err = capsys.readouterr().err
    assert f"{config}:3:3: error: {lab.work} is a git working tree" in err and "git clone --bare" in err
    assert "Traceback" not in err and not (lab.data_dir / "fleet.git").exists()


@pytest.mark.integration
def test_status_device_shows_one_device_in_detail(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    assert lab.run() == 0
    lab.commit({"groups/all.yaml": lab.group_yaml("9.0")}, "upgrade to a missing artifact")
    assert lab.run() == 1
    capsys.readouterr()
    assert main(["status", "--repo", str(lab.server), "--device", "dev1"]) == 0
    out = capsys.readouterr().out
    digest = lab.refs["1.0"].split("@")[1]
    assert out.startswith("device dev1: Failed, behind 1 (applied ")  # the pull failed: NotFound
    assert "counter 1.0 (desired 9.0): running since " in out
    assert f"digest {digest}" in out and f"address 127.0.0.1:{lab.port}" in out
    assert "last error: version 9.0: pull failed" in out
    assert "connection: fetch True (FetchSucceeded); status push True (Pushed), 0 queued" in out
    assert "Degraded True ModelsNotRunning" in out and "drift: none" in out
    assert main(["status", "--repo", str(lab.server), "--device", "dev1", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == "dev1" and doc["status"]["models"][0]["digest"] == digest
    assert main(["status", "--repo", str(lab.server), "--device", "dev3"]) == 1
    assert "unknown device 'dev3'" in capsys.readouterr().err


def test_since_takes_the_forms_the_readme_shows() -> None:
    now = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
    assert parse_since("3 days ago", now) == now - timedelta(days=3)
    assert parse_since("1 week ago", now) == now - timedelta(days=7)
    assert parse_since("12h", now) == now - timedelta(hours=12)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T12:00:00Z", now) == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_readme_views_since_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every --since in README-views.md runs as written (against a tiny repository)."""
    import re
    import shlex

    from tests.fleetutil import ROOT, copy_example, git_init

    root = git_init(copy_example(tmp_path / "fleet"))
    text = (ROOT / "README-views.md").read_text()
    forms = {m.group(1) for m in re.finditer(r"--since ((?:\"[^\"]+\")|\S+?)`", text)}
    forms |= {m.group(1) for m in re.finditer(r"--since (\d+ \w+ ago)", text)}
    assert len(forms) >= 3, forms
    for form in forms:
        # a shell passes a quoted form as one argument; the table's "--since 3 days ago" is one too
        args = ["history", "--model", "people-counter", "--repo", str(root), "--since", " ".join(shlex.split(form))]
        assert main(args) == 0, form
    shutil.rmtree(root)
    capsys.readouterr()
