"""Shared pieces of the bundle tests: a lab whose device cannot reach any server, and signing keys."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.main import main
from tests.agentlab import Lab, free_port


def offline_config(lab: Lab, **extra: object) -> Path:
    """The device's agent.yaml with a repo URL nothing listens on: every fetch or push would fail."""
    path = lab.config_path(**extra)
    text = path.read_text().replace(f"url: {lab.server}", f"url: ssh://git@127.0.0.1:{free_port()}/fleet.git")
    path.write_text(text)
    return path


def signing_key(root: Path, name: str = "admin") -> tuple[Path, Path]:
    """An ed25519 key and an allowed_signers file that trusts it for bundles."""
    key = root / f"{name}_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    pub = (root / f"{name}_ed25519.pub").read_text().split()
    signers = root / f"{name}.allowed_signers"
    # no namespaces option: the key vouches for fleet commits (git) and for bundles alike
    signers.write_text(f"{name}@fleet {pub[0]} {pub[1]}\n")
    return key, signers


def sign_every_commit(monkeypatch: pytest.MonkeyPatch, key: Path) -> None:
    """Every ``git commit`` of the test is SSH-signed with ``key`` (git's GIT_CONFIG_* environment)."""
    for i, (k, v) in enumerate({"gpg.format": "ssh", "user.signingkey": str(key), "commit.gpgsign": "true"}.items()):
        monkeypatch.setenv(f"GIT_CONFIG_KEY_{i}", k)
        monkeypatch.setenv(f"GIT_CONFIG_VALUE_{i}", v)
    monkeypatch.setenv("GIT_CONFIG_COUNT", "3")


def create(lab: Lab, out: Path, *extra: str) -> int:
    return main(["bundle", "create", "--repo", str(lab.server), "-o", str(out), *extra])


def apply(config: Path, bundle: Path, *extra: str) -> int:
    return main(["bundle", "apply", str(bundle), "--config", str(config), *extra])
