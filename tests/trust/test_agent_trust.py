"""The agent with ``trust``: signed commits apply, one bad commit in the range blocks it (file:// repos)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.main import main
from tests.agentlab import stop_workloads
from tests.trust.fleetlab import FLEET, FleetLab, group_yaml
from tests.trust.signing import Key, run_git


@pytest.fixture
def lab(tmp_path: Path, keys: dict[str, Key]) -> Iterator[FleetLab]:
    server = tmp_path / "server.git"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(server))
    lab = FleetLab(tmp_path, str(server))
    lab.trust([keys["alice"].line(), keys["bob"].line(), keys["bot"].line()])
    with stop_workloads(lab.data_dir):
        yield lab


def test_scenario_08_unsigned_commit_is_never_applied(lab: FleetLab, keys: dict[str, Key],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    lab.init(keys["alice"])
    assert lab.run() == 0
    assert lab.running() == "1.0"
    verified = lab.condition("Verified")
    assert verified["status"] == "True" and "signed by alice@acme.example" in verified["message"]
    good = lab.status()["appliedCommit"]
    # an unsigned commit (say, pushed through a compromised mirror or by a stolen deploy key) is refused ...
    bad = lab.commit({"groups/all.yaml": group_yaml("2.0")}, "upgrade, unsigned", None)
    assert lab.run() == 1
    status = lab.status()
    assert status["appliedCommit"] == good and status["observedCommit"] == bad and lab.running() == "1.0"
    verified = lab.condition("Verified")
    assert verified["status"] == "False" and verified["reason"] == "Unsigned"
    assert f"commit {bad[:12]} by Test Operator <operator@example.com> ('upgrade, unsigned')" in verified["message"]
    ready = lab.condition("Ready")
    assert ready["reason"] == "VerificationFailed" and bad[:12] in ready["message"]
    assert status["phase"] == "Failed" and str(status["signedBy"]).startswith("alice@acme.example (SHA256:")
    # the operator sees it: status marks the device unverified
    capsys.readouterr()
    assert main(["status", "--repo", lab.url, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["devices"][0]["verified"] == "False" and doc["summary"]["unverified"] == 1
    assert main(["status", "--repo", lab.url]) == 0
    table = capsys.readouterr().out
    assert "UNVERIFIED: commit" in table and "1 unverified" in table
    # ... and a signed commit on top does not launder it: the whole range is blocked
    lab.commit({"groups/all.yaml": group_yaml("3.0")}, "signed on top", keys["alice"])
    assert lab.run() == 1 and lab.running() == "1.0"
    assert lab.condition("Verified")["reason"] == "Unsigned"
    # the way out: replace the unapplied commits with signed ones (the device still only fast-forwards)
    run_git(lab.work, "reset", "-q", "--hard", str(good))
    fixed = lab.commit({"groups/all.yaml": group_yaml("2.0")}, "upgrade, signed", keys["bob"], force=True)
    assert lab.run() == 0 and lab.running() == "2.0"
    assert lab.status()["appliedCommit"] == fixed
    verified = lab.condition("Verified")
    assert verified["status"] == "True" and "signed by bob@acme.example" in verified["message"]
    # history: the signer of each applied commit, as the device verified it
    capsys.readouterr()
    assert main(["history", "--device", "dev1", "--repo", lab.url]) == 0
    out = capsys.readouterr().out
    assert f"(applied {str(good)[:12]}, signed by alice@acme.example (SHA256:" in out
    assert f"(applied {fixed[:12]}, signed by bob@acme.example (SHA256:" in out


def test_first_apply_needs_a_signed_tip_and_nothing_runs_otherwise(lab: FleetLab, keys: dict[str, Key]) -> None:
    lab.init(None)
    assert lab.run() == 1
    assert lab.status()["appliedCommit"] is None and lab.running() is None
    assert lab.condition("Verified")["reason"] == "Unsigned"
    assert not (lab.data_dir / "process").exists() or not any((lab.data_dir / "process").iterdir())
    # the first apply checks the tip only: an unsigned history before it is the past
    lab.commit({}, "sign the current state", keys["alice"])
    assert lab.run() == 0 and lab.running() == "1.0"


def test_unknown_key_expired_key_and_out_of_scope_are_named(lab: FleetLab, keys: dict[str, Key]) -> None:
    lab.trust([keys["alice"].line(), keys["bob"].line('namespaces="git",valid-before="20200101Z"'),
               keys["bot"].line()])
    lab.init(keys["alice"])
    assert lab.run() == 0
    scoped = FLEET + "  policy:\n    signers:\n      rollout-bot@acme.example: ['rollouts/**']\n"
    lab.commit({"fleet.yaml": scoped}, "scope the bot", keys["alice"])
    assert lab.run() == 0
    base = lab.status()["appliedCommit"]
    cases = [(keys["mallory"], {"groups/all.yaml": group_yaml("2.0")}, "UnknownKey", "no allowed signer has key"),
             (keys["bob"], {"groups/all.yaml": group_yaml("2.0")}, "ExpiredKey", "key expired 2020-01-01T00:00:00Z"),
             (keys["bot"], {"groups/all.yaml": group_yaml("2.0")}, "PathNotAllowed",
              "rollout-bot@acme.example may change only rollouts/**; changed groups/all.yaml")]
    for key, files, reason, text in cases:
        run_git(lab.work, "reset", "-q", "--hard", str(base))
        lab.commit(files, f"by {key.principal}", key, force=True)
        assert lab.run() == 1, reason
        verified = lab.condition("Verified")
        assert verified["reason"] == reason and text in verified["message"], verified
        assert lab.running() == "1.0"
    # in scope, the bot's commit applies
    run_git(lab.work, "reset", "-q", "--hard", str(base))
    canary = ("apiVersion: fleet/v1\nkind: Rollout\nmetadata: {name: canary}\nspec:\n  group: all\n  model: counter\n"
              "  from: '1.0'\n  to: '2.0'\n  steps: [{selector: {matchLabels: {ring: canary}}}]\n")
    lab.commit({"rollouts/canary.yaml": canary}, "bot in scope", keys["bot"], force=True)
    assert lab.run() == 0


def test_rotation_in_the_repo_and_a_broken_anchor(lab: FleetLab, keys: dict[str, Key],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    lab.trust([keys["alice"].line()])
    lab.init(keys["alice"])
    assert lab.run() == 0
    lab.commit({".fleet/allowed_signers": keys["carol"].line() + "\n"}, "trust carol", keys["alice"])
    lab.commit({"groups/all.yaml": group_yaml("2.0")}, "carol upgrades", keys["carol"])
    assert lab.run() == 0 and lab.running() == "2.0"
    # a mirror cannot add its own key
    lab.commit({".fleet/allowed_signers": keys["mallory"].line() + "\n"}, "mallory trusts herself", keys["mallory"])
    assert lab.run() == 1 and lab.condition("Verified")["reason"] == "UnknownKey"
    # an anchor with a syntax error is a located error; nothing new is applied
    lab.anchor.write_text("alice@acme.example namespaces=git " + keys["alice"].public + "\n")
    capsys.readouterr()
    assert lab.run() == 1
    ready = lab.condition("Ready")
    assert ready["reason"] == "ValidationFailed" and f"{lab.anchor}:1:" in ready["message"]
    assert "Traceback" not in capsys.readouterr().err and lab.running() == "2.0"
