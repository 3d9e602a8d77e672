"""The agent process under a real NOTIFY_SOCKET, as systemd runs it: READY, STATUS, watchdog pings, their
stop when a pass hangs, STOPPING at SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.service.devicefleet import agent_config, device_fleet, head
from tests.service.notifysocket import NotifySocket

pytestmark = pytest.mark.integration


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def start_agent(config: Path, notify: NotifySocket, watchdog_usec: int = 1_000_000) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)}
    return subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(config.with_suffix(".log"), "wb"))


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def test_ready_status_and_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    repo = device_fleet(tmp_path, model=False)
    proc = start_agent(agent_config(tmp_path, repo), notify_socket)
    try:
        ready = notify_socket.wait_for("READY")
        assert ready["READY"] == "1" and ready["MAINPID"] == str(proc.pid)
        status = notify_socket.wait_for("STATUS", "Ready; applied")
        assert status["STATUS"].startswith(f"Ready; applied {head(repo)[:12]}; 0/0 models running")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert notify_socket.wait_for("STOPPING")["STOPPING"] == "1"
    finally:
        stop(proc)


def test_watchdog_pings_stop_when_a_pass_hangs(tmp_path: Path, notify_socket: NotifySocket) -> None:
    repo = device_fleet(tmp_path, model=False)
    config = agent_config(tmp_path, repo, timeouts={"pass": 1.5, "git": 60})
    # a "git server" that accepts the TCP connection and then never says a word
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)
    proc = start_agent(config, notify_socket)
    try:
        notify_socket.wait_for("STATUS", "Ready; applied")
        time.sleep(2.5)  # several passes (interval 1 s), each within its deadline
        healthy = [t for t, _ in notify_socket.with_key("WATCHDOG")]
        assert len(healthy) >= 4
        doc = yaml.safe_load(config.read_text())
        doc["repo"]["url"] = f"ssh://git@127.0.0.1:{black_hole.getsockname()[1]}/fleet"
        config.write_text(yaml.safe_dump(doc))  # the loop takes the edit up and its next fetch hangs
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait until pings have stopped for two watchdog periods
            pings = [t for t, _ in notify_socket.with_key("WATCHDOG")]
            if pings and time.monotonic() - pings[-1] > 2.0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("watchdog pings went on although the pass hangs")
        assert proc.poll() is None  # the process lives: it is systemd's watchdog that will restart it
        log = config.with_suffix(".log").read_text()
        assert "treated as hung, watchdog pings stopped" in log
    finally:
        stop(proc)
        black_hole.close()
