"""sd_notify against a real datagram socket, and the watchdog that follows the loop's liveness."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent.liveness import Liveness
from reconciler.service.notify import Notifier, Watchdog
from tests.service.notifysocket import NotifySocket


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.close()


def test_ready_and_status_arrive_as_one_datagram(notify_socket: NotifySocket) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(notify_socket.path)})
    assert n.send(READY="1", STATUS="loaded\nsecond line")
    m = notify_socket.wait_for("READY")
    assert m == {"READY": "1", "STATUS": "loaded second line"}  # STATUS stays one line
    n.close()


def test_abstract_socket_name() -> None:
    name = f"reconciler-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.send(STATUS="hello")
        assert server.recv(100) == b"STATUS=hello"
        n.close()


def test_outside_systemd_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.send(READY="1")
    assert n.watchdog_seconds is None


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.send(WATCHDOG="1") is False


def test_watchdog_interval_only_for_this_process() -> None:
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}).watchdog_seconds == 4.0
    assert Notifier({"WATCHDOG_USEC": "4000000"}).watchdog_seconds == 4.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_seconds is None


def test_pings_stop_while_a_pass_hangs_and_resume_after(notify_socket: NotifySocket) -> None:
    liveness = Liveness(deadline=0.4)
    stalls: list[float] = []
    dog = Watchdog(Notifier({"NOTIFY_SOCKET": str(notify_socket.path)}), liveness, interval=0.05,
                   on_stall=stalls.append)
    dog.start()
    try:
        time.sleep(0.3)
        idle_pings = len(notify_socket.with_key("WATCHDOG"))
        assert idle_pings >= 3  # between passes the loop is alive
        liveness.begin()
        time.sleep(0.25)
        assert len(notify_socket.with_key("WATCHDOG")) > idle_pings  # a pass within its deadline: still alive
        time.sleep(0.35)
        hung_at = time.monotonic()
        time.sleep(0.4)
        assert not [t for t, _ in notify_socket.with_key("WATCHDOG") if t > hung_at]
        assert len(stalls) == 1 and stalls[0] >= 0.4  # said once, with how long the pass has run
        liveness.end()
        resumed = time.monotonic()
        time.sleep(0.3)
        assert [t for t, _ in notify_socket.with_key("WATCHDOG") if t > resumed]
    finally:
        dog.stop()
        dog.join(2)
