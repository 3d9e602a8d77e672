"""The agent's own configuration and its timing: environment overrides, locations, jitter, backoff."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from reconciler.agent.config import AgentConfig, load
from reconciler.agent.cycle import Cycle
from reconciler.agent.loop import BACKOFF_START, Agent, jitter_fraction
from reconciler.errors import AuthError, InvalidConfig, LockHeld, Transient
from reconciler.git.location import is_url, local_path

CONFIG = """\
device: dev1
repo:
  url: ../fleet.git
dataDir: data
interval: 120
jitter: 10
"""


def _write(tmp_path: Path, text: str = CONFIG) -> Path:
    path = tmp_path / "etc" / "agent.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_environment_overrides_the_file_and_paths_resolve_beside_it(tmp_path: Path) -> None:
    config = load(_write(tmp_path), {"RECONCILER_DEVICE": "dev9", "RECONCILER_INTERVAL": "30",
                                     "RECONCILER_REPO_BRANCH": "prod"})
    assert (config.device, config.interval, config.jitter, config.branch) == ("dev9", 30.0, 10, "prod")
    assert config.repo_url == str(tmp_path / "etc" / ".." / "fleet.git")
    assert config.data_dir == tmp_path / "etc" / "data"
    assert config.local_repo_path() == Path(config.repo_url)


def test_environment_alone_is_a_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load(None, {"RECONCILER_DEVICE": "dev2", "RECONCILER_REPO_URL": "ssh://git@fleet.example/fleet",
                         "RECONCILER_DATA_DIR": "/var/lib/reconciler"})
    assert (config.device, config.repo_url, config.data_dir) == ("dev2", "ssh://git@fleet.example/fleet",
                                                                 Path("/var/lib/reconciler"))
    assert config.local_repo_path() is None


def test_a_bad_environment_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfig) as caught:
        load(_write(tmp_path), {"RECONCILER_INTERVAL": "soon"})
    assert [p.format() for p in caught.value.problems] == [
        "$RECONCILER_INTERVAL: error: expected a number, got 'soon' (interval)"]


@pytest.mark.parametrize("url", ["gitolite@fleet.example:fleet", "fleet.example:fleet.git",
                                 "ssh://git@fleet.example:2222/fleet", "https://fleet.example/fleet.git"])
def test_remote_addresses_stay_as_written(tmp_path: Path, url: str) -> None:
    config = load(_write(tmp_path, CONFIG.replace("../fleet.git", url)))
    assert config.repo_url == url
    assert config.local_repo_path() is None
    assert is_url(url)


@pytest.mark.parametrize(("location", "path"), [("/srv/fleet.git", "/srv/fleet.git"), ("fleet", "fleet"),
                                                ("./a:b", "a:b"), ("file:///srv/fleet.git", "/srv/fleet.git")])
def test_local_locations(location: str, path: str) -> None:
    assert local_path(location) == Path(path)


def test_jitter_is_stable_per_device_and_spreads_a_fleet() -> None:
    assert jitter_fraction("dev1") == jitter_fraction("dev1")
    fractions = [jitter_fraction(f"edge-{i:05d}") for i in range(2000)]
    assert all(0.0 <= f < 1.0 for f in fractions)
    assert abs(statistics.mean(fractions) - 0.5) < 0.03
    deciles = [sum(1 for f in fractions if i / 10 <= f < (i + 1) / 10) for i in range(10)]
    assert min(deciles) > 150 and max(deciles) < 250  # 200 each if uniform


def _agent(tmp_path: Path) -> Agent:
    agent = Agent.__new__(Agent)  # the timing rule needs only the configuration
    agent.config = AgentConfig(path=None, device="dev1", repo_url=str(tmp_path), data_dir=tmp_path,
                               interval=300.0, jitter=60.0)
    agent.failures = 0
    return agent


def test_transient_errors_back_off_exponentially_capped_at_the_interval(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    extra = jitter_fraction("dev1")
    base = 300.0 + 60.0 * extra
    waits = [agent.next_wait(Cycle(error=Transient("registry down"))) for _ in range(9)]
    assert waits[:4] == [BACKOFF_START + extra, 2 * BACKOFF_START + extra, 4 * BACKOFF_START + extra,
                         8 * BACKOFF_START + extra]
    assert waits[-1] == base + extra  # capped
    assert agent.next_wait(Cycle()) == base  # success resets the count
    assert agent.next_wait(Cycle(error=Transient("again"))) == BACKOFF_START + extra


def test_terminal_errors_wait_the_interval_and_waiting_errors_their_own_time(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    base = 300.0 + 60.0 * jitter_fraction("dev1")
    assert agent.next_wait(Cycle(error=AuthError("refused"))) == base
    assert agent.next_wait(Cycle(error=LockHeld("busy", retry_after=42.0))) == 42.0
