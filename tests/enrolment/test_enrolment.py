"""Enrolment against the real git server (gitolite behind sshd): enroll writes the device file and registers
the key and rule with a real push to gitolite-admin; join installs the bundle; the device then fetches and
reports; an expired bundle is refused; a removed device can no longer fetch or push."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from reconciler.main import main
from tests.services.gitserver import GitServer

pytestmark = pytest.mark.integration

FLEET = {
    "fleet.yaml": "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: enrol}\nspec:\n"
                  "  defaults: {runtime: process}\n  status: {heartbeatInterval: 1h}\n",
}


def admin_args(server: GitServer) -> list[str]:
    return ["--repo", server.url(), "--admin-repo", server.url("gitolite-admin"), "--ssh-key",
            str(server.key("admin")), "--known-hosts", str(server.known_hosts)]


def show(server: GitServer, tmp: Path, repo: str, rev_path: str) -> str | None:
    clone = tmp / f"look-{repo}-{time.monotonic_ns()}"
    server.git("admin", "clone", "-q", server.url(repo), str(clone))
    res = server.git("admin", "show", rev_path, cwd=clone, check=False)
    return res.stdout if res.returncode == 0 else None


def test_enroll_join_report_remove(gitolite_server: GitServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = gitolite_server
    server.commit_files(tmp_path, FLEET, "fleet")
    bundle = tmp_path / "cam9.join.json"
    assert main(["device", "enroll", "cam9", "--labels", "site=north", "arch=arm64", "--bundle", str(bundle),
                 "--data-dir", str(tmp_path / "data"), *admin_args(server)]) == 0
    out = capsys.readouterr().out
    assert "enrolled cam9" in out and "devices/cam9.yaml written" in out
    assert "PRIVATE KEY" not in out

    device = yaml.safe_load(show(server, tmp_path, "fleet", "origin/main:devices/cam9.yaml") or "")
    assert device["metadata"] == {"name": "cam9", "labels": {"site": "north", "arch": "arm64"}}
    rule = show(server, tmp_path, "gitolite-admin", "HEAD:conf/reconciler-devices/cam9.conf") or ""
    assert "RW+ refs/heads/status/cam9$   = cam9" in rule
    assert 'include "reconciler-devices/*.conf"' in (show(server, tmp_path, "gitolite-admin",
                                                          "HEAD:conf/gitolite.conf") or "")
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    doc = json.loads(bundle.read_text())
    assert doc["kind"] == "JoinBundle" and doc["device"] == "cam9" and "PRIVATE KEY" in doc["sshKey"]
    spare = tmp_path / "spare.join.json"
    shutil.copy(bundle, spare)

    # the device side
    config = tmp_path / "etc" / "agent.yaml"
    assert main(["agent", "join", str(bundle), "--config", str(config)]) == 0
    assert "joined as cam9" in capsys.readouterr().out
    assert not bundle.exists()  # it held the private key
    for name in ("agent.yaml", "id_ed25519", "id_ed25519.pub", "known_hosts"):
        assert stat.S_IMODE((config.parent / name).stat().st_mode) == 0o600, name
    installed = yaml.safe_load(config.read_text())
    assert installed["device"] == "cam9" and installed["repo"]["url"] == server.url()
    assert main(["agent", "join", str(spare), "--config", str(config)]) == 1  # no overwrite without --force
    assert "exists" in capsys.readouterr().err and spare.exists()

    assert main(["agent", "--config", str(config), "--once"]) == 0  # fetched with its own key, status pushed
    assert "cam9: Ready" in capsys.readouterr().out
    status = yaml.safe_load(show(server, tmp_path, "fleet", "origin/status/cam9:status.yaml") or "")
    assert status["device"] == "cam9" and status["phase"] == "Ready"

    # enrolling the same name again needs --force (a new key)
    assert main(["device", "enroll", "cam9", "--bundle", str(tmp_path / "again.json"), *admin_args(server)]) == 1
    assert "enrolled already" in capsys.readouterr().err

    # removal: the key and the rule go, the device file too; the device can no longer fetch or push
    assert main(["device", "remove", "cam9", *admin_args(server)]) == 0
    assert "revoked the key and the rule of cam9" in capsys.readouterr().out
    assert show(server, tmp_path, "fleet", "origin/main:devices/cam9.yaml") is None
    assert show(server, tmp_path, "gitolite-admin", "HEAD:keydir/cam9.pub") is None
    key = config.parent / "id_ed25519"
    env_cmd = server.ssh_command("admin").replace(str(server.key("admin")), str(key))
    fetch = subprocess.run(["git", "ls-remote", server.url()], env={**os.environ, "GIT_SSH_COMMAND": env_cmd},
                           capture_output=True, text=True, timeout=60)
    assert fetch.returncode != 0
    assert main(["agent", "--config", str(config), "--once"]) == 1
    after = yaml.safe_load(show(server, tmp_path, "fleet", "origin/status/cam9:status.yaml") or "")
    assert after["lastSeen"] == status["lastSeen"]  # nothing new reached the server


def test_an_expired_bundle_is_refused(gitolite_server: GitServer, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    server = gitolite_server
    server.commit_files(tmp_path, FLEET, "fleet")
    bundle = tmp_path / "cam10.json"
    assert main(["device", "enroll", "cam10", "--expires", "1s", "--bundle", str(bundle), *admin_args(server)]) == 0
    time.sleep(1.2)
    config = tmp_path / "etc" / "agent.yaml"
    assert main(["agent", "join", str(bundle), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "join bundle of cam10 expired at" in err and "PRIVATE" not in err
    assert not config.exists() and not (config.parent / "id_ed25519").exists()
    assert main(["device", "remove", "cam10", *admin_args(server)]) == 0


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    assert main(["agent", "join", str(junk), "--config", str(tmp_path / "a.yaml")]) == 1
    assert "not a join bundle (invalid JSON" in capsys.readouterr().err
    assert main(["agent", "join", str(tmp_path / "missing.json"), "--config", str(tmp_path / "a.yaml")]) == 1
    assert "cannot read the join bundle" in capsys.readouterr().err
    assert main(["device", "enroll", "Bad_Name", "--repo", "x", "--admin-repo", "y"]) == 2
    assert "device name 'Bad_Name'" in capsys.readouterr().err
