"""Shared fixtures.  Service fixtures (real registry, git server, dockerd) live in tests/services/."""

from __future__ import annotations

import os
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
