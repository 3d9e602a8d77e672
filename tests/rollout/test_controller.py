"""The rollout controller on a real bare repository with status branches in the agent's layout (written
directly, so each test sets what devices report): decisions are commits, counts are in their messages."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pygit2
import pytest
import yaml

from reconciler.errors import InvalidConfig
from reconciler.fleet.rollouts import bucket
from reconciler.git.mirror import FleetMirror
from reconciler.main import main
from reconciler.rollout.controller import Controller
from tests.fleetutil import fleet_and_model, git, write
from tests.views.test_views import put_status, status_doc

DEVICES = [f"d{i:02d}" for i in range(20)]


def rollout_yaml(steps: str, gates: str = "{maxFailed: 0, minReporting: 100}", extra: str = "") -> str:
    return f"""
        apiVersion: fleet/v1
        kind: Rollout
        metadata: {{name: m2}}
        spec:
          group: all
          model: m
          from: "1.0"
          to: "2.0"
          steps: {steps}
          gates: {gates}
        {extra}"""


class Fleet:
    def __init__(self, root: Path) -> None:
        self.work, self.server = root / "work", root / "server.git"
        fleet_and_model(self.work)
        write(self.work, "groups/all.yaml", """
            # the whole fleet
            apiVersion: fleet/v1
            kind: Group
            metadata: {name: all}
            spec:
              models:
                - name: m
                  version: "1.0"   # pinned by the rollout controller on completion
            """)
        for d in DEVICES:
            write(self.work, f"devices/{d}.yaml", f"apiVersion: fleet/v1\nkind: Device\nmetadata: {{name: {d}}}\n"
                                                  "spec: {}\n")
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", "fleet")
        subprocess.run(["git", "clone", "-q", "--bare", str(self.work), str(self.server)], check=True)
        git(self.work, "remote", "add", "origin", str(self.server))
        self.mirror = FleetMirror(root / "cache.git", str(self.server), "main")

    def commit(self, rel: str, text: str, message: str = "change") -> str:
        write(self.work, rel, text)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        git(self.work, "push", "-q", "origin", "main")
        return git(self.work, "rev-parse", "HEAD")

    def pull(self) -> None:
        git(self.work, "pull", "-q", "--ff-only", "origin", "main")

    def tip(self) -> str:
        return git(self.server, "rev-parse", "main")

    def report(self, device: str, version: str, state: str = "running", applied: str | None = None,
               phase: str = "Ready", desired: str | None = None) -> None:
        error = "health check failed" if state in ("rolledBack", "failed") else None
        put_status(self.server, device, status_doc(
            device, phase, applied or self.tip(), [("m", version, state)], time.time(), error,
            {"m": desired} if desired else None), time.time())

    def rollout(self) -> dict[str, object]:
        doc = yaml.safe_load(git(self.server, "show", "main:rollouts/m2.yaml"))
        assert isinstance(doc, dict)
        return doc

    def pin(self) -> str:
        doc = yaml.safe_load(git(self.server, "show", "main:groups/all.yaml"))
        return str(doc["spec"]["models"][0]["version"])

    def run(self) -> list[str]:
        """One controller run; the decisions' commit messages (first lines)."""
        before = self.tip()
        Controller(self.mirror).run_once(time.time())
        out = git(self.server, "log", "--format=%s", f"{before}..main")
        return out.splitlines() if out else []


def cohort(r: str, percent: float) -> list[str]:
    return [d for d in DEVICES if bucket(r, d) < percent]


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def test_healthy_rollout_advances_step_by_step_and_completes_by_moving_the_pin(fleet: Fleet) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}, {percent: 50}, {percent: 100}]"), "start")
    assert fleet.run() == []  # nobody reported yet: minReporting holds it
    assert fleet.rollout().get("status") is None
    fleet.report("d00", "2.0")
    [msg] = fleet.run()
    assert msg.startswith("rollout m2: advance to step 2/3 (50%)") and "cohort 1: 1 healthy, 0 failed, 0 unknown" in msg
    status = fleet.rollout()["status"]
    assert isinstance(status, dict) and status["step"] == 1 and status["phase"] == "Progressing"
    assert status["counts"] == {"cohort": 1, "healthy": 1, "failed": 0, "unknown": 0}
    half = sorted({"d00", *cohort("m2", 50)})
    assert 3 <= len(half) <= 17
    # d00 applied the step-1 commit only: it joined at step 1, so it still counts as healthy
    for d in half:
        if d != "d00":
            fleet.report(d, "2.0")
    [msg] = fleet.run()
    assert "advance to step 3/3 (100%)" in msg and f"cohort {len(half)}: {len(half)} healthy" in msg
    assert fleet.run() == []  # the rest has not reported
    for d in DEVICES:
        if d not in half:
            fleet.report(d, "2.0")
    [msg] = fleet.run()
    assert msg.startswith("rollout m2: complete: group all pins m 2.0") and "cohort 20: 20 healthy" in msg
    assert fleet.pin() == "2.0" and fleet.rollout()["status"]["phase"] == "Complete"  # type: ignore[index]
    text = git(fleet.server, "show", "main:groups/all.yaml")
    assert "# the whole fleet" in text and "# pinned by the rollout controller" in text  # edited in place
    assert main(["validate", str(fleet.server), "--rev", "main"]) == 0
    assert fleet.run() == []  # over: nothing more to decide
    body = git(fleet.server, "log", "-1", "--format=%B%n%an <%ae>", "main")
    assert "Rollout-Decision: complete" in body and "reconciler rollout <rollout@fleet.invalid>" in body


def test_a_failure_aborts_with_a_revert_commit_and_offline_devices_never_count_as_failed(fleet: Fleet) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{percent: 50}, {percent: 100}]"), "start")
    members = cohort("m2", 50)
    assert len(members) >= 3
    first, second, *rest = members
    fleet.report(first, "2.0")
    # second never reports (offline); one device not in the cohort is Degraded on something else
    outsider = next(d for d in DEVICES if d not in members)
    fleet.report(outsider, "1.0", phase="Degraded")
    for d in rest:
        fleet.report(d, "2.0")
    assert fleet.run() == []  # held at minReporting by the offline device, not aborted
    fleet.report(rest[0], "1.0", state="rolledBack", desired="2.0", phase="Degraded")
    [msg] = fleet.run()
    assert msg.startswith("rollout m2: abort at step 1/2 (50%): 1 failed > maxFailed 0")
    assert f"cohort {len(members)}: {len(members) - 2} healthy, 1 failed, 1 unknown" in msg
    body = git(fleet.server, "log", "-1", "--format=%B", "main")
    assert f"Failed: {rest[0]} (m@1.0 (rolledBack from 2.0)" in body and f"Unknown: {second}" in body
    assert fleet.rollout()["status"]["phase"] == "Aborted"  # type: ignore[index]
    assert fleet.pin() == "1.0"
    # the revert is the commit: every device renders from again
    for d in members:
        code = main(["render", str(fleet.server), "--rev", "main", "--device", d])
        assert code == 0
    assert fleet.run() == []


def test_pause_on_failure_waits_for_a_person_and_resumes(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00, d01]}, {percent: 100}]",
                                                  "{maxFailed: 0, minReporting: 50}", "  onFailure: pause"))
    fleet.report("d00", "1.0", state="rolledBack", desired="2.0", phase="Degraded")
    [msg] = fleet.run()
    assert msg.startswith("rollout m2: pause at step 1/2 (devices d00, d01)")
    assert fleet.run() == []  # paused: no decision until a person acts
    capsys.readouterr()
    assert main(["rollout", "status", "--repo", str(fleet.server), "m2"]) == 0
    out = capsys.readouterr().out
    assert "Paused" in out and "waiting for a person" in out and "d00" in out and "failed" in out
    fleet.pull()
    text = (fleet.work / "rollouts/m2.yaml").read_text().replace("phase: Paused", "phase: Progressing")
    fleet.commit("rollouts/m2.yaml", text, "resume m2 after fixing d00")
    fleet.report("d00", "2.0")
    fleet.report("d01", "2.0")
    [msg] = fleet.run()
    assert "advance to step 2/2" in msg


def test_bake_time_holds_a_step(fleet: Fleet) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00], bake: 1h}, {percent: 100}]"))
    fleet.report("d00", "2.0")
    assert fleet.run() == []
    Controller(fleet.mirror).run_once(time.time() + 3601)
    assert "advance to step 2/2" in git(fleet.server, "log", "-1", "--format=%s", "main")


def test_a_device_that_applied_an_older_commit_is_unknown_not_healthy(fleet: Fleet) -> None:
    old = fleet.tip()
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}, {percent: 100}]"))
    fleet.report("d00", "2.0", applied=old)  # claims 2.0 from before the rollout began: not this step's work
    assert fleet.run() == []


def test_signed_decisions_verify_with_git(fleet: Fleet, tmp_path: Path) -> None:
    key = tmp_path / "controller"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rollout", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"rollout@fleet.invalid {key.with_suffix('.pub').read_text().strip()}\n")
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}, {percent: 100}]"))
    fleet.report("d00", "2.0")
    Controller(fleet.mirror, sign_key=key).run_once(time.time())
    res = subprocess.run(["git", "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-commit", "main"],
                         cwd=fleet.server, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert 'Good "git" signature for rollout@fleet.invalid' in res.stderr


def test_the_branch_moving_while_deciding_means_deciding_again(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}, {percent: 100}]"))
    fleet.report("d00", "2.0")
    controller = Controller(fleet.mirror)
    real = fleet.mirror.fetch_all
    calls = []

    def fetch_then_someone_pushes() -> None:
        real()
        if not calls:
            fleet.commit("devices/d19.yaml", "apiVersion: fleet/v1\nkind: Device\nmetadata: {name: d19}\n"
                                             "spec: {groups: [extra]}\n", "a person's change")
        calls.append(1)

    monkeypatch.setattr(fleet.mirror, "fetch_all", fetch_then_someone_pushes)
    controller.run_once(time.time())
    log = git(fleet.server, "log", "--format=%s", "-3", "main").splitlines()
    assert log[0].startswith("rollout m2: advance") and log[1] == "a person's change" and len(calls) == 2


def test_validate_refuses_bad_rollouts(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    bad = rollout_yaml("[{percent: 50}, {percent: 20}, {devices: [nope]}]").replace('from: "1.0"', 'from: "2.0"')
    write(fleet.work, "rollouts/m2.yaml", bad)
    write(fleet.work, "rollouts/other.yaml", rollout_yaml("[{percent: 10}]").replace("m2", "other")
          .replace('to: "2.0"', 'to: "9.9"'))
    write(fleet.work, "rollouts/ghost.yaml", rollout_yaml("[{percent: 10}]").replace("m2", "ghost")
          .replace("group: all", "group: nogroup"))
    capsys.readouterr()
    assert main(["validate", str(fleet.work)]) == 1
    out = capsys.readouterr().out
    assert "rollouts/m2.yaml:9:27: error: step 2 is 20%, not more than an earlier step's 50%" in out
    assert "canary device 'nope' has no file devices/nope.yaml" in out
    assert "rollout 'm2' starts from m '2.0' but group 'all' pins '1.0' (spec.from)" in out
    assert "rollouts/other.yaml" in out and "model 'm' has no version '9.9' (known: 1.0, 2.0) (spec.to)" in out
    assert "rollout 'ghost': unknown group 'nogroup'" in out
    assert "two active rollouts of model 'm' in group 'all'" in out


def test_controller_refuses_to_decide_an_invalid_rollout(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}]").replace('from: "1.0"', 'from: "2.0"')
                 .replace('to: "2.0"', 'to: "1.0"'))
    fleet.report("d00", "1.0")
    assert fleet.run() == []
    capsys.readouterr()
    assert main(["rollout", "status", "--repo", str(fleet.server)]) == 0
    assert "invalid, no decision: rollouts/m2.yaml" in capsys.readouterr().out


def test_an_unparsable_edit_is_refused_not_half_made() -> None:
    from reconciler.rollout import edit

    text = "apiVersion: fleet/v1\nkind: Rollout\nstatus: {step: 0}\nmetadata: {name: x}\n"
    out = edit.set_status("rollouts/x.yaml", text, {"step": 1, "phase": "Progressing"})
    assert yaml.safe_load(out) == {"apiVersion": "fleet/v1", "kind": "Rollout", "metadata": {"name": "x"},
                                   "status": {"step": 1, "phase": "Progressing"}}
    with pytest.raises(InvalidConfig.__mro__[1]):  # Stalled
        edit.set_pin("groups/g.yaml", "spec:\n  models: [{name: m, version: {a: 1}}]\n", "m", "2.0")


def test_cohorts_are_stable_and_nest() -> None:
    assert bucket("m2", "d00") == bucket("m2", "d00")
    assert bucket("m2", "d00") != bucket("m3", "d00")
    small, large = set(cohort("m2", 20)), set(cohort("m2", 60))
    assert small <= large
    many = [bucket("r", f"dev{i}") for i in range(10_000)]
    assert 900 < sum(b < 10 for b in many) < 1100  # about 10% in a 10% step
    assert pygit2  # the repo layout is pygit2's: imported for the controller


def test_plan_of_a_rollout_shows_cohort_sizes_and_the_devices_that_change(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    base = fleet.tip()
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00, d01]}, {percent: 50}, {percent: 100}]"))
    capsys.readouterr()
    assert main(["plan", base, "main", "--repo", str(fleet.server)]) == 0
    out = capsys.readouterr().out
    assert "rollout m2: m 1.0 -> 2.0, step 1/3 (devices d00, d01), Progressing: cohort 2 of 20 devices of group all" in out
    assert "d00 (changed)\n  ~ model m 1.0 -> 2.0 (upgrade, group all)" in out and "2 devices affected" in out
    fleet.report("d00", "2.0")
    fleet.report("d01", "2.0")
    step1 = fleet.tip()
    fleet.run()
    assert main(["plan", step1, "main", "--repo", str(fleet.server)]) == 0
    out = capsys.readouterr().out
    half = sorted(set(cohort("m2", 50)) - {"d00", "d01"})
    assert (f"step 2/3 (50%), Progressing: cohort {len(half) + 2} of 20 devices of group all (was 2, step 1/3 "
            "(devices d00, d01) Progressing)") in out
    assert f"{len(half)} device{'s' if len(half) != 1 else ''} affected" in out
    assert all(f"{d} (changed)" in out for d in half) and "d00 (changed)" not in out


def test_status_branches_in_a_status_repository_of_their_own(fleet: Fleet, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    statuses = tmp_path / "status.git"
    git(tmp_path, "init", "-q", "--bare", str(statuses))
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}, {percent: 100}]"))
    put_status(statuses, "d00", status_doc("d00", "Ready", fleet.tip(), [("m", "2.0", "running")], time.time()),
               time.time())
    assert fleet.run() == []  # the fleet repo holds no status branch
    Controller(fleet.mirror, status_location=str(statuses)).run_once(time.time())
    assert "advance to step 2/2" in git(fleet.server, "log", "-1", "--format=%s", "main")
    capsys.readouterr()
    assert main(["rollout", "status", "--repo", str(fleet.server), "--status-repo", str(statuses)]) == 0
    assert "step 2/2 (100%), Progressing; cohort 20: 1 healthy, 0 failed, 19 unknown" in capsys.readouterr().out


def test_history_shows_each_decision_commit_with_the_devices_it_switched(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    fleet.commit("rollouts/m2.yaml", rollout_yaml("[{devices: [d00]}, {percent: 50}, {percent: 100}]"))
    fleet.report("d00", "2.0")
    fleet.run()
    capsys.readouterr()
    assert main(["history", "--model", "m", "--repo", str(fleet.server)]) == 0
    out = capsys.readouterr().out
    advance = out[out.index("reconciler rollout <rollout@fleet.invalid>: rollout m2: advance to step 2/3"):]
    switched = [line.split(":")[0].strip() for line in advance.splitlines()[1:] if "~ model m 1.0 -> 2.0" in line]
    assert switched == sorted(set(cohort("m2", 50)) - {"d00"})
    assert main(["history", "--device", "d00", "--repo", str(fleet.server)]) == 0
    out = capsys.readouterr().out
    assert "Test Operator <operator@example.com>: change\n    ~ model m 1.0 -> 2.0 (upgrade, group all)" in out
