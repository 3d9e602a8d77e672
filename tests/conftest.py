"""Shared fixtures.  Service fixtures (real registry, git server, dockerd) live in tests/services/."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.services.registry",
    "tests.services.gitserver",
    "tests.services.dockerd",
    "tests.services.webserver",
]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _pinned_git_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Real git, pinned: no global or system config, a fixed author."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for key, value in {
        "GIT_AUTHOR_NAME": "Test Operator",
        "GIT_AUTHOR_EMAIL": "operator@example.com",
        "GIT_COMMITTER_NAME": "Test Operator",
        "GIT_COMMITTER_EMAIL": "operator@example.com",
    }.items():
        monkeypatch.setenv(key, value)


def missing_system_packages() -> str:
    """The Debian packages the integration tests need and this machine lacks ("" when none), asked of the same
    script that ``make test`` and CI use to install them."""
    try:
        out = subprocess.run(["bash", str(ROOT / "scripts/install-system-deps.sh"), "--check"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(cannot check: {exc})"
    return out.stdout.strip() if out.returncode else ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = [item for item in items if item.get_closest_marker("integration")]
    if not integration:
        return
    missing = missing_system_packages()
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"missing Debian packages ({missing}): run 'sudo bash "
                                   "scripts/install-system-deps.sh'")
    for item in integration:
        item.add_marker(skip)
