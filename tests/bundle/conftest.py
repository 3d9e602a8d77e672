"""Shared pieces of the bundle tests: a lab whose device cannot reach any server, and signing keys."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.main import main
from tests.agentlab import Lab, free_port, publish, stop_workloads
from tests.fleetutil import git
from tests.services.registry import RegistryServer, run_registry


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RegistryServer, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        refs = {v: publish(reg.address, work, "models/counter", v, os.urandom(300_000)) for v in ("1.0", "2.0")}
        yield reg, refs


@pytest.fixture
def lab(tmp_path: Path, registry: tuple[RegistryServer, dict[str, str]]) -> Iterator[Lab]:
    lab = Lab(tmp_path, registry[0].address, registry[1])
    lab.setup()
    with stop_workloads(lab.data_dir):
        yield lab


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


def device_files(lab: Lab) -> dict[str, object]:
    """What a refused bundle must leave as it was: state, refs, store blobs, activated models."""
    data = lab.data_dir

    def names(d: Path) -> list[str]:
        # files and links: an empty directory made on the way is no state
        return sorted(str(p.relative_to(data)) for p in d.rglob("*") if not p.is_dir() or p.is_symlink()) \
            if d.exists() else []

    def text(p: Path) -> str | None:
        return p.read_text() if p.exists() else None

    refs = git(data / "fleet.git", "for-each-ref", "--format=%(refname) %(objectname)").splitlines() \
        if (data / "fleet.git").exists() else []
    return {"state": text(data / "state.json"), "refs": sorted(refs), "blobs": names(data / "blobs"),
            "models": names(data / "models"), "applied": text(data / "bundles/applied.json"),
            "ingest": names(data / "ingest")}
