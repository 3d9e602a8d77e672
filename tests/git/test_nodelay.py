"""The Nagle workaround: a TCP socket opened during a git operation gets TCP_NODELAY, nothing else does."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest

from reconciler.git.nodelay import tcp_nodelay

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def _nodelay(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def _wait_for(sock: socket.socket, seconds: float = 2.0) -> int:
    deadline = time.monotonic() + seconds
    while _nodelay(sock) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    return _nodelay(sock)


def test_the_socket_opened_to_the_port_gets_nodelay(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with tcp_nodelay(port) as watcher:
        client = socket.create_connection(("127.0.0.1", port))
        assert _nodelay(client) == 0  # Python, like libgit2, leaves Nagle on
        assert _wait_for(client) == 1
    assert watcher is not None and watcher.found
    client.close()


def test_sockets_to_other_ports_and_older_sockets_are_left_alone(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    with socket.create_server(("127.0.0.1", 0)) as other_server:
        before = socket.create_connection(("127.0.0.1", port))  # opened before the operation
        with tcp_nodelay(port) as watcher:
            other = socket.create_connection(("127.0.0.1", other_server.getsockname()[1]))
            time.sleep(0.2)
            assert _nodelay(other) == 0
            assert _nodelay(before) == 0
        assert watcher is not None and not watcher.found
        other.close()
        before.close()


def test_the_watcher_stops_with_the_operation(listener: socket.socket) -> None:
    with tcp_nodelay(listener.getsockname()[1]) as watcher:
        pass
    assert watcher is not None and not watcher.thread.is_alive()
