"""agent join on its own: a bundle made here (no git server), the files it installs, and --start."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from reconciler.agent import config as agentconfig
from reconciler.enrolment.bundle import JoinBundle
from reconciler.main import main
from tests.fleetutil import git
from tests.service.devicefleet import device_fleet

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"


def make_bundle(path: Path, repo: str, data_dir: Path, expires_in: timedelta = timedelta(hours=24),
                signers: str | None = None) -> Path:
    now = datetime.now(UTC).replace(microsecond=0)
    bundle = JoinBundle(device="edge1", created=now, expires=now + expires_in,
                        config={"device": "edge1", "repo": {"url": repo, "branch": "main", "path": ""},
                                "dataDir": str(data_dir), "interval": 1, "jitter": 0},
                        ssh_key=KEY, ssh_public_key="ssh-ed25519 AAAA edge1@reconciler",
                        known_hosts="[127.0.0.1]:2222 ssh-ed25519 AAAA\n", allowed_signers=signers)
    path.write_bytes(bundle.to_json())
    return path


def test_join_installs_everything_0600_and_points_the_config_at_it(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b.json", "ssh://git@127.0.0.1:2222/fleet", tmp_path / "data",
                         signers="ops@acme namespaces=\"git\" ssh-ed25519 AAAA\n")
    config = tmp_path / "etc" / "agent.yaml"
    assert main(["agent", "join", str(bundle), "--config", str(config)]) == 0
    installed = yaml.safe_load(config.read_text())
    etc = config.parent
    assert installed["repo"]["sshKey"] == str(etc / "id_ed25519")
    assert installed["repo"]["knownHosts"] == str(etc / "known_hosts")
    assert installed["trust"] == {"allowedSigners": str(etc / "allowed_signers")}
    assert (etc / "id_ed25519").read_text() == KEY
    for name in ("agent.yaml", "id_ed25519", "id_ed25519.pub", "known_hosts", "allowed_signers"):
        assert stat.S_IMODE((etc / name).stat().st_mode) == 0o600, name
    assert not bundle.exists()
    loaded = agentconfig.load(config)
    assert loaded.device == "edge1" and loaded.ssh_key == etc / "id_ed25519"


def test_force_replaces_and_a_tampered_or_foreign_file_is_refused(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("device: old\n")
    bundle = make_bundle(tmp_path / "b.json", "file:///nowhere", tmp_path / "data")
    assert main(["agent", "join", str(bundle), "--config", str(config), "--force"]) == 0
    assert yaml.safe_load(config.read_text())["device"] == "edge1"
    other = tmp_path / "other.json"
    doc = json.loads(make_bundle(tmp_path / "c.json", "file:///x", tmp_path / "d").read_text())
    doc["kind"] = "Something"
    other.write_text(json.dumps(doc))
    assert main(["agent", "join", str(other), "--config", str(tmp_path / "n.yaml")]) == 1
    assert "not a join bundle (kind JoinBundle" in capsys.readouterr().err


@pytest.mark.integration
def test_join_start_runs_the_agent(tmp_path: Path) -> None:
    repo = device_fleet(tmp_path, model=False)
    bundle = make_bundle(tmp_path / "b.json", str(repo), tmp_path / "data")
    config = tmp_path / "etc" / "agent.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "join", str(bundle), "--config",
                             str(config), "--start"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", "refs/heads/status/edge1"],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline and proc.poll() is None, "the joined agent did not report"
            time.sleep(0.2)
        status = yaml.safe_load(git(repo, "show", "status/edge1:status.yaml"))
        assert status["device"] == "edge1" and status["phase"] == "Ready"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and b"joined as edge1" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
