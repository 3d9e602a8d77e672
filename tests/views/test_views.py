"""``reconciler status`` and ``reconciler history`` on real git repositories: a fleet repo made from
fleet-config/, status branches written the way the agent writes them (StatusWriter, or pygit2 commits in the
same layout when a test needs to set the clock), read through a local path, a file:// URL and ssh."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pygit2
import pytest
import yaml

from reconciler.git.mirror import FleetMirror, GitAuth
from reconciler.main import main
from reconciler.status.writer import StatusWriter
from reconciler.views import snapshot
from reconciler.views.fleetrepo import open_fleet_repo
from reconciler.views.history import changes
from reconciler.views.statusview import StatusView, age_text
from tests.fleetutil import ROOT, copy_example, git, git_init

SCHEMA = json.loads((ROOT / "schemas" / "status.schema.json").read_text())
NOW = int(time.time())


@pytest.fixture(autouse=True)
def _fresh_now() -> None:
    """Times in these tests are relative to the test's own start, not to when the suite imported this file."""
    global NOW
    NOW = int(time.time())
HOUR = 3600


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_doc(device: str, phase: str, applied: str | None, models: list[tuple[str, str, str]],
               last_seen: float, error: str | None = None, desired: Mapping[str, str] | None = None) -> str:
    """A status.yaml that matches schemas/status.schema.json (checked, so tests speak the agent's contract)."""
    ready = {"type": "Ready", "status": "False" if error else "True",
             "reason": "HealthCheckFailed" if error else "ReconciliationSucceeded",
             "message": error or "applied", "lastTransitionTime": iso(last_seen)}
    doc: dict[str, Any] = {
        "apiVersion": "fleet/v1", "kind": "DeviceStatus", "device": device, "agentVersion": "0.1.0",
        "runtime": "process", "observedCommit": applied, "appliedCommit": applied, "phase": phase,
        "conditions": [ready],
        "models": [
            {"name": n, "version": v, "state": s, "digest": "sha256:" + (v.replace(".", "") * 64)[:64],
             "since": iso(last_seen), "lastError": error if s in ("failed", "rolledBack") else None,
             "group": "all", **({"desiredVersion": desired[n]} if desired and n in desired else {})}
            for n, v, s in models
        ],
        "lastSeen": iso(last_seen), "push": {"pending": 0, "lastError": None},
    }
    jsonschema.validate(doc, SCHEMA)
    return yaml.safe_dump(doc, sort_keys=False)


def put_status(repo_path: Path, device: str, text: str, when: float, ref_prefix: str = "refs/heads/") -> str:
    """One status commit at ``when`` in the writer's layout: status.yaml alone, parent = previous tip."""
    repo = pygit2.Repository(str(repo_path))
    ref = f"{ref_prefix}status/{device}"
    parents = [repo.references[ref].target] if ref in repo.references else []
    builder = repo.TreeBuilder()
    builder.insert("status.yaml", repo.create_blob(text.encode()), pygit2.enums.FileMode.BLOB)
    sig = pygit2.Signature(device, f"{device}@devices.fleet.invalid", int(when), 0)
    return str(repo.create_commit(ref, sig, sig, f"status: {device}", builder.write(), parents))


def commit_as(work: Path, message: str, when: float, name: str = "Test Operator",
              email: str = "operator@example.com") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_AUTHOR_DATE": f"{int(when)} +0000", "GIT_COMMITTER_DATE": f"{int(when)} +0000"}
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=work, check=True, env=env)
    return git(work, "rev-parse", "HEAD")


def set_pin(work: Path, group: str, model: str, old: str, new: str) -> None:
    path = work / "groups" / f"{group}.yaml"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == f"- name: {model}" and f'"{old}"' in lines[i + 1]:
            lines[i + 1] = lines[i + 1].replace(f'"{old}"', f'"{new}"')
            break
    else:
        raise AssertionError(f"no pin {model} {old} in {path}")
    path.write_text("".join(lines))


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def table_rows(out: str) -> dict[str, list[str]]:
    """Table lines split on runs of two or more spaces, by device."""
    import re

    rows = {}
    for line in out.splitlines()[1:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0].split(" ")[0]] = cells
    return rows


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[Path, str, str]:
    """A fleet repo (work tree) from fleet-config/: C1 at NOW-3h, then C2 at NOW-2h upgrading the pilot group's
    people-counter 1.0.0 -> 1.1.0 (cam-north-01 and lab-01 run it)."""
    work = copy_example(tmp_path / "fleet")
    git_init(work)
    subprocess.run(["git", "commit", "-q", "--amend", "--no-edit", "--date", f"{NOW - 3 * HOUR} +0000"],
                   cwd=work, check=True, env={**os.environ, "GIT_COMMITTER_DATE": f"{NOW - 3 * HOUR} +0000"})
    c1 = git(work, "rev-parse", "HEAD")
    set_pin(work, "pilot", "people-counter", "1.0.0", "1.1.0")
    c2 = commit_as(work, "pilot: people-counter 1.1.0\n\nTicket OPS-12", NOW - 2 * HOUR,
                   name="Alice Ops", email="alice@acme.example")
    return work, c1, c2


# -- status ----------------------------------------------------------------------------------------------------
def seed_statuses(work: Path, c1: str, c2: str) -> None:
    put_status(work, "cam-north-01", status_doc("cam-north-01", "Ready", c1, [
        ("people-counter", "1.0.0", "running"), ("shelf-detector", "2.0.0", "running")], NOW - 2.5 * HOUR),
        NOW - 2.5 * HOUR)
    put_status(work, "cam-north-02", status_doc("cam-north-02", "Ready", c2, [
        ("people-counter", "1.1.0", "running")], NOW - 60), NOW - 60)
    put_status(work, "cam-south-01", status_doc("cam-south-01", "Ready", c1, [
        ("people-counter", "1.0.0", "running"), ("wildlife-id", "1.1.0", "running")], NOW - 9 * 86400),
        NOW - 9 * 86400)
    put_status(work, "lab-01", status_doc("lab-01", "Failed", c2, [
        ("people-counter", "1.0.0", "rolledBack"), ("shelf-detector", "2.0.0", "failed")], NOW - 120,
        error="shelf-detector 2.0.0: health check GET /healthz answered 500 for 60s",
        desired={"people-counter": "1.1.0"}), NOW - 120)
    put_status(work, "retired-07", status_doc("retired-07", "Ready", "f" * 40, [], NOW - 300), NOW - 300)


def test_status_table_shows_convergence_staleness_errors_and_never_seen(
        fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, c1, c2 = fleet
    seed_statuses(work, c1, c2)
    code, out, _ = cli(capsys, "status", "--repo", str(work))
    assert code == 0
    rows = table_rows(out)
    assert out.splitlines()[0].split() == ["DEVICE", "PHASE", "APPLIED", "LAST", "SEEN", "STALE", "LAST",
                                           "ERROR", "MODELS"]
    assert rows["cam-north-01"][1:5] == ["Ready", "behind 1", "2h ago", "no"]
    assert rows["cam-north-01"][5:] == ["-", "people-counter@1.0.0, shelf-detector@2.0.0"]
    assert rows["cam-north-02"][1:5] == ["Ready", "converged", "1m ago", "no"]
    assert rows["cam-south-01"][1:5] == ["Ready", "behind 1", "9d ago", "yes"]  # fleet.yaml: staleAfter 7d
    assert rows["gateway-01"][1:5] == ["-", "never seen", "never", "-"]
    assert rows["lab-01"][1:4] == ["Failed", "converged", "2m ago"]
    assert rows["lab-01"][6] == "people-counter@1.0.0 (rolledBack from 1.1.0), shelf-detector@2.0.0 (failed)"
    assert rows["lab-01"][5] == "shelf-detector 2.0.0: health check GET /healthz a…"  # trimmed to 50
    lab = next(line for line in out.splitlines() if line.startswith("lab-01"))
    assert lab.index("people-counter@") == out.splitlines()[0].index("MODELS")  # columns stay aligned
    assert rows["retired-07"][0] == "retired-07 (not in fleet)"
    assert rows["retired-07"][2] == "unknown"  # its applied commit is not in main's history
    assert list(rows) == sorted(rows)
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("6 devices: 4 Ready, 0 Progressing, 0 Degraded, 1 Failed, 1 stale, 2 behind, "
                              "1 unknown, 1 never seen")
    assert f"main@{c2[:12]}, stale after 7d" in summary


def test_status_json_rows_and_summary(fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, c1, c2 = fleet
    seed_statuses(work, c1, c2)
    code, out, _ = cli(capsys, "status", "--repo", str(work), "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["mainCommit"] == c2 and data["staleAfterSeconds"] == 7 * 86400
    rows = {r["device"]: r for r in data["devices"]}
    assert rows["cam-north-01"]["convergence"] == "behind 1" and rows["cam-north-01"]["behind"] == 1
    assert rows["cam-north-01"]["appliedCommit"] == c1
    assert rows["cam-south-01"]["stale"] is True and rows["cam-south-01"]["lastSeen"] == iso(NOW - 9 * 86400)
    assert rows["gateway-01"]["neverSeen"] is True and rows["gateway-01"]["phase"] is None
    assert rows["lab-01"]["lastError"] == "shelf-detector 2.0.0: health check GET /healthz answered 500 for 60s"
    assert rows["retired-07"]["inFleet"] is False and rows["retired-07"]["behind"] is None
    assert data["summary"] == {"devices": 6, "phases": {"Ready": 4, "Progressing": 0, "Degraded": 0, "Failed": 1},
                               "stale": 1, "behind": 2, "unknown": 1, "neverSeen": 1,
                               "unverified": 0}


def test_stale_after_comes_from_fleet_yaml_or_the_flag(
        fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, _, c2 = fleet
    fleet_yaml = work / "fleet.yaml"
    fleet_yaml.write_text(fleet_yaml.read_text().replace("staleAfter: 7d", "staleAfter: 12h"))
    c3 = commit_as(work, "status: stale after 12h", NOW - HOUR)
    put_status(work, "cam-north-02", status_doc("cam-north-02", "Ready", c2, [], NOW - 13 * HOUR), NOW - 13 * HOUR)
    put_status(work, "lab-01", status_doc("lab-01", "Progressing", c3, [], NOW - 11 * HOUR), NOW - 11 * HOUR)
    rows = table_rows(cli(capsys, "status", "--repo", str(work))[1])
    assert (rows["cam-north-02"][4], rows["lab-01"][4]) == ("yes", "no")
    assert rows["cam-north-02"][2] == "behind 1"  # every fleet commit counts, whatever it changed
    rows = table_rows(cli(capsys, "status", "--repo", str(work), "--stale-after", "90m")[1])
    assert (rows["cam-north-02"][4], rows["lab-01"][4]) == ("yes", "yes")
    rows = table_rows(cli(capsys, "status", "--repo", str(work), "--stale-after", "2d")[1])
    assert (rows["cam-north-02"][4], rows["lab-01"][4]) == ("no", "no")
    code, _, err = cli(capsys, "status", "--repo", str(work), "--stale-after", "soon")
    assert code == 2 and "--stale-after 'soon'" in err


def test_stale_when_the_clock_moves_on(fleet: tuple[Path, str, str]) -> None:
    work, _, c2 = fleet
    put_status(work, "cam-north-02", status_doc("cam-north-02", "Ready", c2, [], NOW), NOW)
    repo = open_fleet_repo(str(work))
    later = datetime.fromtimestamp(NOW, UTC) + timedelta(days=7, seconds=1)
    [row] = [r for r in StatusView(repo, now=later).rows() if r.device == "cam-north-02"]
    assert row.stale and row.age_seconds == 7 * 86400 + 1
    [row] = [r for r in StatusView(repo, now=later - timedelta(seconds=2)).rows() if r.device == "cam-north-02"]
    assert not row.stale


def test_unreadable_status_file_is_a_row_not_a_crash(
        fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, _, _ = fleet
    put_status(work, "cam-north-02", "phase: [Ready\nmodels: {", int(time.time()) - 60)
    code, out, _ = cli(capsys, "status", "--repo", str(work), "--format", "json")
    assert code == 0
    [row] = [r for r in json.loads(out)["devices"] if r["device"] == "cam-north-02"]
    assert row["phase"] == "Unknown" and row["lastError"].startswith("status.yaml is not valid YAML at line")
    assert row["ageSeconds"] == pytest.approx(60, abs=30)  # falls back to the commit time


def test_repo_that_cannot_be_read_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status", "--repo", str(tmp_path / "nope"))
    assert (code, out) == (1, "") and f"{tmp_path / 'nope'}: no such repository" in err
    (tmp_path / "plain").mkdir()
    code, _, err = cli(capsys, "status", "--repo", str(tmp_path / "plain"))
    assert code == 1 and "not a git repository" in err
    code, _, err = cli(capsys, "status", "--repo", f"file://{tmp_path}/missing.git",
                       "--cache-dir", str(tmp_path / "cache"))
    assert code == 1 and "missing.git" in err
    git_init(copy_example(tmp_path / "fleet"))
    code, _, err = cli(capsys, "status", "--repo", str(tmp_path / "fleet"), "--branch", "prod")
    assert code == 1 and "branch 'prod' not found" in err


def test_file_url_reads_the_same_as_a_path_and_follows_the_server(
        fleet: tuple[Path, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Devices push with StatusWriter to a bare origin; the view fetches status/* into its cache."""
    work, _, c2 = fleet
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    writers = {}
    for device in ("cam-north-02", "lab-01"):
        mirror = FleetMirror(tmp_path / "devices" / device, f"file://{origin}", timeout=10)
        assert str(mirror.fetch()) == c2
        writers[device] = StatusWriter(mirror, device)
        writers[device].commit(status_doc(device, "Ready", c2, [("people-counter", "1.1.0", "running")], NOW),
                               "Ready")
        assert writers[device].push().pushed

    def rows(repo: str) -> dict[str, dict[str, Any]]:
        code, out, _ = cli(capsys, "status", "--repo", repo, "--format", "json", "--cache-dir", str(tmp_path / "c"))
        assert code == 0
        return {r["device"]: {k: v for k, v in r.items() if k != "ageSeconds"} for r in json.loads(out)["devices"]}

    by_url, by_path = rows(f"file://{origin}"), rows(str(origin))
    assert by_url == by_path
    assert by_url["lab-01"]["phase"] == "Ready" and by_url["lab-01"]["convergence"] == "converged"
    assert by_url["cam-north-01"]["neverSeen"]

    writers["lab-01"].commit(status_doc("lab-01", "Degraded", c2, [("people-counter", "1.1.0", "failed")], NOW,
                                        error="people-counter exited 3"), "Degraded")
    assert writers["lab-01"].push().pushed
    git(origin, "update-ref", "-d", "refs/heads/status/cam-north-02")  # an operator retired the branch
    again = rows(f"file://{origin}")
    assert again["lab-01"]["phase"] == "Degraded" and again["lab-01"]["lastError"] == "people-counter exited 3"
    assert again["cam-north-02"]["neverSeen"]  # pruned from the cache, not served stale


def test_device_data_dir_prefers_its_queued_commits(fleet: tuple[Path, str, str], tmp_path: Path) -> None:
    """An agent's bare mirror has refs/remotes/origin/status/X (the server's) and refs/heads/status/X (queued)."""
    work, _, c2 = fleet
    data = tmp_path / "data.git"
    git(tmp_path, "clone", "-q", "--mirror", str(work), str(data))
    git(data, "update-ref", "refs/remotes/origin/main", c2)
    git(data, "update-ref", "-d", "refs/heads/main")
    put_status(data, "lab-01", status_doc("lab-01", "Progressing", c2, [], NOW - 60), NOW - 60,
               ref_prefix="refs/remotes/origin/")
    repo = pygit2.Repository(str(data))
    repo.references.create("refs/heads/status/lab-01", repo.references["refs/remotes/origin/status/lab-01"].target)
    put_status(data, "lab-01", status_doc("lab-01", "Ready", c2, [], NOW - 10), NOW - 10)
    view = StatusView(open_fleet_repo(str(data)))
    [row] = [r for r in view.rows() if r.device == "lab-01"]
    assert row.phase == "Ready"
    # and the other way round: the server moved on (a fetch) past an old local branch
    put_status(data, "lab-01", status_doc("lab-01", "Degraded", c2, [], NOW - 5), NOW - 5,
               ref_prefix="refs/remotes/origin/")
    [row] = [r for r in StatusView(open_fleet_repo(str(data))).rows() if r.device == "lab-01"]
    assert row.phase == "Degraded"
    # history decides, not clocks: a queued commit made after the device's clock jumped back still wins
    repo.references.create("refs/heads/status/lab-01", repo.references["refs/remotes/origin/status/lab-01"].target,
                           force=True)
    put_status(data, "lab-01", status_doc("lab-01", "Failed", c2, [], NOW - 86400), NOW - 86400)
    [row] = [r for r in StatusView(open_fleet_repo(str(data))).rows() if r.device == "lab-01"]
    assert row.phase == "Failed"


# -- history ---------------------------------------------------------------------------------------------------
def test_device_history_merges_who_asked_and_what_ran_in_time_order(
        fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, c1, c2 = fleet
    (work / "README.md").write_text("unrelated\n")
    commit_as(work, "docs only", NOW - 90 * 60)
    other = work / "devices" / "gateway-01.yaml"
    other.write_text(other.read_text().replace("cpus: 2", "cpus: 3"))
    commit_as(work, "gateway gets 3 cpus", NOW - 80 * 60)
    pc = ("people-counter", "1.0.0", "running")
    sd = ("shelf-detector", "2.0.0", "running")
    put_status(work, "cam-north-01", status_doc("cam-north-01", "Progressing", c1, [pc], NOW - 170 * 60),
               NOW - 170 * 60)
    put_status(work, "cam-north-01", status_doc("cam-north-01", "Ready", c1, [pc, sd], NOW - 160 * 60),
               NOW - 160 * 60)
    put_status(work, "cam-north-01", status_doc("cam-north-01", "Ready", c1, [pc, sd], NOW - 150 * 60),
               NOW - 150 * 60)  # a heartbeat: nothing changed, no event
    s4 = put_status(work, "cam-north-01", status_doc(
        "cam-north-01", "Ready", c2, [("people-counter", "1.1.0", "running"), sd], NOW - 100 * 60), NOW - 100 * 60)

    code, out, _ = cli(capsys, "history", "--device", "cam-north-01", "--repo", str(work))
    assert code == 0
    heads = [line for line in out.splitlines()[1:] if not line.startswith(" ")]
    assert [h.split()[1] for h in heads] == ["desired", "observed", "observed", "desired", "observed"]
    assert heads[3] == (f"{iso(NOW - 2 * HOUR)}  desired   {c2[:12]}  Alice Ops <alice@acme.example>: "
                        "pilot: people-counter 1.1.0")
    assert heads[4] == f"{iso(NOW - 100 * 60)}  observed  {s4[:12]}  cam-north-01 (applied {c2[:12]})"
    assert "    ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group pilot)" in out
    assert "    ~ model people-counter 1.0.0 -> 1.1.0 running (sha256:110110110110)" in out
    assert "docs only" not in out and "gateway" not in out  # commits that cannot change this device

    code, out, _ = cli(capsys, "history", "--device", "cam-north-01", "--repo", str(work), "--format", "json",
                       "--since", iso(NOW - 2 * HOUR - 1))
    events = json.loads(out)["events"]
    assert [(e["kind"], e["commit"]) for e in events] == [("desired", c2), ("observed", s4)]
    assert events[0]["who"] == "Alice Ops <alice@acme.example>"
    assert events[1]["appliedCommit"] == c2 and events[1]["changes"] == [
        f"applied fleet commit {c2[:12]}", "~ model people-counter 1.0.0 -> 1.1.0 running (sha256:110110110110)"]


def test_history_of_an_invalid_commit_and_its_fix(fleet: tuple[Path, str, str]) -> None:
    work, _, _ = fleet
    set_pin(work, "pilot", "people-counter", "1.1.0", "9.9.9")  # no such version
    bad = commit_as(work, "typo", NOW - HOUR)
    set_pin(work, "pilot", "people-counter", "9.9.9", "1.2.0")
    model = work / "models" / "people-counter.yaml"
    text = model.read_text()
    start = text.index('    "1.1.0":')
    model.write_text(text.rstrip("\n") + "\n" + text[start:].replace('"1.1.0"', '"1.2.0"', 1))
    fixed = commit_as(work, "pilot: 1.2.0 for real", NOW - 30 * 60)
    from reconciler.views.history import desired_for_device

    events = list(desired_for_device(open_fleet_repo(str(work)), "cam-north-01"))
    by_commit = {e.commit: e.lines for e in events}
    assert by_commit[bad][0].startswith("! desired state invalid, the device keeps its last good state:")
    assert "9.9.9" in by_commit[bad][0]
    # compared with the last good state (1.1.0), not with the invalid one
    assert by_commit[fixed] == ("~ model people-counter 1.1.0 -> 1.2.0 (upgrade, group pilot)",)


def test_model_history_across_devices(fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, c1, c2 = fleet
    put_status(work, "lab-01", status_doc("lab-01", "Ready", c1, [("people-counter", "1.0.0", "running")],
                                          NOW - 170 * 60), NOW - 170 * 60)
    put_status(work, "lab-01", status_doc("lab-01", "Degraded", c2, [("people-counter", "1.1.0", "rolledBack")],
                                          NOW - 100 * 60, error="1.1.0 failed its health check"), NOW - 100 * 60)
    put_status(work, "cam-south-01", status_doc("cam-south-01", "Ready", c1, [("wildlife-id", "1.1.0", "running")],
                                                NOW - 100 * 60), NOW - 100 * 60)
    code, out, _ = cli(capsys, "history", "--model", "people-counter", "--repo", str(work), "--format", "json")
    assert code == 0
    events = json.loads(out)["events"]
    assert [(e["kind"], e["device"]) for e in events] == [
        ("desired", None), ("observed", "lab-01"), ("desired", None), ("observed", "lab-01")]
    assert "cam-north-02: + model people-counter 1.1.0 (group north-stores)" in events[0]["changes"]
    assert events[2]["changes"] == ["cam-north-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group pilot)",
                                    "lab-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group pilot)"]
    assert events[3]["changes"] == ["~ model people-counter 1.0.0 -> 1.1.0 rolledBack (sha256:110110110110): "
                                    "1.1.0 failed its health check"]
    code, out, _ = cli(capsys, "history", "--model", "wildlife-id", "--repo", str(work), "--since", iso(NOW - HOUR))
    assert code == 0 and out.splitlines()[1:] == ["no changes found since " + iso(NOW - HOUR)]


def test_history_usage_errors(fleet: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    work, _, _ = fleet
    assert cli(capsys, "history", "--repo", str(work))[0] == 2
    assert cli(capsys, "history", "--device", "a", "--model", "b", "--repo", str(work))[0] == 2
    code, _, err = cli(capsys, "history", "--device", "lab-01", "--repo", str(work), "--since", "last tuesday")
    assert code == 2 and "--since 'last tuesday'" in err


# -- pure pieces -----------------------------------------------------------------------------------------------
def test_status_changes_between_reports() -> None:
    def snap(phase: str, *models: tuple[str, str, str, str | None]) -> snapshot.Snapshot:
        return snapshot.Snapshot("d", phase, "c" * 40, None,
                                 tuple(snapshot.ModelSnapshot(n, v, s, dg) for n, v, s, dg in models), None, None, None)

    a = snap("Progressing", ("m", "1.0", "pending", None))
    b = snap("Ready", ("m", "1.0", "running", "sha256:" + "1" * 64), ("n", "2", "running", None))
    assert changes(None, a) == ["phase Progressing (first report)", f"applied fleet commit {'c' * 12}",
                                "+ model m 1.0 pending"]
    assert changes(a, b) == ["phase Progressing -> Ready", "~ model m 1.0 pending -> running (sha256:111111111111)",
                             "+ model n 2 running"]
    c = snap("Ready", ("m", "1.0", "running", "sha256:" + "2" * 64))
    assert changes(b, c) == ["~ model m 1.0 digest sha256:111111111111 -> sha256:222222222222",
                             "- model n 2 no longer runs"]
    assert changes(b, c, model="n") == ["- model n 2 no longer runs"]
    assert changes(c, c) == []


def test_snapshot_reads_leniently() -> None:
    s = snapshot.from_bytes("d", b"phase: Ready\nmodels: [{name: m, version: 1.5}, {version: 2}, 7]\nlastSeen: x\n")
    assert (s.phase, [m.label() for m in s.models], s.last_seen) == ("Ready", ["m@1.5"], None)
    assert snapshot.from_bytes("d", b"- a list\n").problem == "status.yaml is not a mapping"
    t = snapshot.from_bytes("d", b"lastSeen: '2024-05-01T10:00:00+02:00'\n")
    assert t.last_seen == datetime(2024, 5, 1, 8, tzinfo=UTC) and t.phase == "Unknown"


def test_age_text() -> None:
    assert [age_text(s) for s in (None, -10, 59, 61, 7200, 3 * 86400 + 5, -3600)] == [
        "never", "0s ago", "59s ago", "1m ago", "2h ago", "3d ago", "in future"]


# -- over ssh --------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_status_and_history_over_ssh(git_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """gitolite over ssh: a device pushes its status with its own key; the operator reads with the admin key."""
    fleet_files = {"fleet.yaml": (ROOT / "fleet-config" / "fleet.yaml").read_text()}
    for d in ("dev1", "dev2"):
        fleet_files[f"devices/{d}.yaml"] = f"apiVersion: fleet/v1\nkind: Device\nmetadata: {{name: {d}}}\nspec: {{}}\n"
    c1 = git_server.commit_files(tmp_path / "admin", fleet_files, "fleet: two devices")
    auth = GitAuth(ssh_key=git_server.key("dev1"), known_hosts=git_server.known_hosts)
    mirror = FleetMirror(tmp_path / "dev1", git_server.url(), auth=auth, timeout=20)
    mirror.fetch()
    writer = StatusWriter(mirror, "dev1")
    writer.commit(status_doc("dev1", "Ready", c1, [], NOW), "Ready")
    assert writer.push().pushed
    common = ["--repo", git_server.url(), "--ssh-key", str(git_server.key("admin")),
              "--known-hosts", str(git_server.known_hosts), "--cache-dir", str(tmp_path / "cache")]
    code, out, _ = cli(capsys, "status", *common, "--format", "json")
    assert code == 0
    rows = {r["device"]: r for r in json.loads(out)["devices"]}
    assert rows["dev1"]["convergence"] == "converged" and rows["dev2"]["neverSeen"]
    assert json.loads(out)["repo"] == git_server.url()
    code, out, _ = cli(capsys, "history", "--device", "dev1", *common)
    assert code == 0 and "phase Ready (first report)" in out and f"applied {c1[:12]}" in out
    wrong = tmp_path / "known_hosts_wrong"
    wrong.write_text("")
    code, _, err = cli(capsys, "status", *common[:4], "--known-hosts", str(wrong), "--cache-dir", str(tmp_path / "c2"))
    assert code == 1 and "is not listed in" in err
