"""``reconciler verify`` (one line per commit) and the pre-receive hook with ``reconciler.allowedSigners``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.main import main
from tests.fleetutil import ROOT, minimal_fleet
from tests.trust.signing import Key, run_git, signed_commit

SCOPE = "  policy:\n    signers:\n      rollout-bot@acme.example: ['rollouts/**']\n"

# a real Rollout: rollouts/ files are fleet documents, validated by the pre-receive hook like the rest
ROLLOUT = ("apiVersion: fleet/v1\nkind: Rollout\nmetadata: {name: r}\nspec:\n  group: g\n  model: m\n"
           "  from: '1.0'\n  to: '2.0'\n  steps: [{devices: [d1]}]\n")


def _fleet(tmp_path: Path, keys: dict[str, Key]) -> tuple[Path, Path, str]:
    work = minimal_fleet(tmp_path / "work")
    fleet = work / "fleet.yaml"
    fleet.write_text(fleet.read_text() + SCOPE)
    run_git(work, "init", "-q", "-b", "main")
    base = signed_commit(work, {}, "initial fleet", keys["alice"])
    anchor = tmp_path / "allowed_signers"
    anchor.write_text(f"{keys['alice'].line()}\n{keys['bot'].line()}\n")
    return work, anchor, base


def test_verify_prints_one_line_per_commit(tmp_path: Path, keys: dict[str, Key],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    work, anchor, base = _fleet(tmp_path, keys)
    good = signed_commit(work, {"rollouts/r.yaml": ROLLOUT}, "bot rollout", keys["bot"])
    bad = signed_commit(work, {"groups/g.yaml": None}, "bot out of scope", keys["bot"])
    unsigned = signed_commit(work, {"x.txt": "x"}, "unsigned", None)
    capsys.readouterr()
    assert main(["verify", "--repo", str(work), "--allowed-signers", str(anchor), f"{base}..{good}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"ok   {good[:12]} Verified by rollout-bot@acme.example (SHA256:")
    assert out[-1] == "1 commit signed by allowed signers"
    assert main(["verify", "--repo", str(work), "--allowed-signers", str(anchor), f"{base}..HEAD"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0:3] for line in out[:3]] == [["ok", good[:12], "Verified"], ["FAIL", bad[:12], "PathNotAllowed"],
                                                       ["FAIL", unsigned[:12], "Unsigned"]]
    assert "changed groups/g.yaml" in out[1] and "author Test Operator <operator@example.com>" in out[2]
    assert out[-1].startswith(f"commit {bad[:12]} by Test Operator")
    # json, and the anchor from git config
    run_git(work, "config", "reconciler.allowedSigners", str(anchor))
    assert main(["verify", "--repo", str(work), "--format", "json", f"{base}..HEAD"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [c["verdict"] for c in doc["commits"]] == ["Verified", "PathNotAllowed", "Unsigned"] and not doc["ok"]
    # bad usage and bad input: one clear line, no traceback
    run_git(work, "config", "--unset", "reconciler.allowedSigners")
    assert main(["verify", "--repo", str(work), "HEAD"]) == 2
    assert "no allowed signers" in capsys.readouterr().err
    assert main(["verify", "--repo", str(work), "--allowed-signers", str(anchor), "nope..HEAD"]) == 1
    assert "unknown revision 'nope'" in capsys.readouterr().err
    anchor.write_text("alice ssh-ed25519 AAAA\n")
    assert main(["verify", "--repo", str(work), "--allowed-signers", str(anchor), "HEAD"]) == 1
    err = capsys.readouterr().err
    assert f"{anchor}:1:" in err and "Traceback" not in err


def _push(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["git", "push", *args], cwd=work, env=env, capture_output=True, text=True)


def test_pre_receive_refuses_unsigned_and_out_of_scope_pushes(tmp_path: Path, keys: dict[str, Key]) -> None:
    work, anchor, _ = _fleet(tmp_path, keys)
    server = tmp_path / "server.git"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(server))
    shutil.copy(ROOT / "hooks/pre-receive", server / "hooks/pre-receive")
    run_git(server, "config", "reconciler.allowedSigners", str(anchor))
    run_git(work, "remote", "add", "origin", str(server))
    first = _push(work, "-q", "origin", "main")
    assert first.returncode == 0, first.stderr
    unsigned = signed_commit(work, {"x.txt": "x"}, "unsigned change", None)
    refused = _push(work, "origin", "main")
    assert refused.returncode != 0
    assert "not signed by an allowed signer; push refused" in refused.stderr
    assert f"FAIL {unsigned[:12]} Unsigned" in refused.stderr
    run_git(work, "reset", "-q", "--hard", "HEAD~1")
    scoped = signed_commit(work, {"groups/g.yaml": None}, "bot deletes a group", keys["bot"])
    refused = _push(work, "origin", "main")
    assert refused.returncode != 0 and f"FAIL {scoped[:12]} PathNotAllowed" in refused.stderr
    run_git(work, "reset", "-q", "--hard", "HEAD~1")
    ok = signed_commit(work, {"rollouts/r.yaml": ROLLOUT}, "bot rollout", keys["bot"])
    accepted = _push(work, "-q", "origin", "main")
    assert accepted.returncode == 0, accepted.stderr
    assert run_git(server, "rev-parse", "main").stdout.strip() == ok
    # a new protected branch is checked at its tip; status branches pass through
    signed_commit(work, {"y.txt": "y"}, "unsigned again", None)
    assert _push(work, "origin", "HEAD:refs/heads/status/d1").returncode == 0
    run_git(server, "config", "reconciler.protect", "main release")
    assert _push(work, "origin", "HEAD:refs/heads/release").returncode != 0
