"""--log-format json: one object per line with time, level, logger, message, device and the pass's commit;
secrets masked as in every other output."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent import config as agentconfig
from reconciler.agent.loop import Agent
from reconciler.service.daemon import configure_logging
from tests.agentlab import stop_workloads
from tests.service.devicefleet import agent_config, device_fleet, head


@pytest.fixture(autouse=True)
def _drop_agent_handler() -> Iterator[None]:
    yield
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == "reconciler-agent"]:
        root.removeHandler(h)


def test_agent_once_logs_one_json_object_per_line(tmp_path: Path) -> None:
    repo = device_fleet(tmp_path)
    config = agent_config(tmp_path, repo, logFormat="json")
    with stop_workloads(tmp_path / "data-edge1"):
        res = subprocess.run([sys.executable, "-m", "reconciler", "agent", "--config", str(config), "--once"],
                             capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    lines = [json.loads(line) for line in res.stderr.splitlines()]  # every line is one JSON object
    assert lines
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message", "device", "commit"}
        assert line["device"] == "edge1" and line["time"].endswith("Z")
    assert {line["commit"] for line in lines} == {head(repo)}  # the commit the pass worked on
    assert any(line["logger"] == "reconciler.agent" and line["message"].startswith("start sleeper")
               for line in lines), lines


def test_text_is_the_default_and_the_flag_overrides_the_config(tmp_path: Path) -> None:
    repo = device_fleet(tmp_path)
    config = agent_config(tmp_path, repo, logFormat="json")
    with stop_workloads(tmp_path / "data-edge1"):
        res = subprocess.run([sys.executable, "-m", "reconciler", "agent", "--config", str(config), "--once",
                              "--log-format", "text"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert " INFO reconciler.agent: start sleeper" in res.stderr and "{" not in res.stderr


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_are_masked(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "registry-password"
    secret.write_text("hunter2-very-secret\n")
    repo = device_fleet(tmp_path, model=False)
    config = agent_config(tmp_path, repo, credentials={"reg": {"username": "edge", "passwordFile": str(secret)}})
    agent = Agent(agentconfig.load(config))
    configure_logging(agent, fmt, "INFO")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("reconciler.test").exception("login with hunter2-very-secret failed")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "***" in err
    if fmt == "json":
        line = json.loads(err.strip().splitlines()[-1] if "\n" not in err.strip() else err.strip())
        assert line["message"] == "login with *** failed" and "ZeroDivisionError" in line["exception"]
        assert line["commit"] is None  # nothing applied yet
