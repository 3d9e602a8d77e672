"""The listeners with real sockets: mode 0660, TCP read-only, and what a slow or hostile client cannot do."""

from __future__ import annotations

import json
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.agent.liveness import Liveness
from reconciler.api import client
from reconciler.api.metrics import Recorder
from reconciler.api.routes import App
from reconciler.api.server import ApiServer, Limits
from reconciler.errors import NotFound, Transient

LIMITS = Limits(connections=2, io_timeout=0.5, deadline=1.0, request_bytes=4096, poll=0.05)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ApiServer, str, tuple[str, int]]]:
    sock = tmp_path / "agent.sock"
    sock.write_text("stale socket of an agent that died")
    server = ApiServer(App("edge1", Liveness(60), Recorder(), wake=lambda: None), [str(sock), "127.0.0.1:0"],
                       LIMITS)
    bound = server.start()
    host, port = bound[1].split(":")
    yield server, str(sock), (host, int(port))
    server.stop()


def raw(where: str | tuple[str, int], data: bytes, timeout: float = 5.0) -> bytes:
    family = socket.AF_UNIX if isinstance(where, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(where)
        if data:
            s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_unix_socket_mode_and_tcp_is_read_only(served: tuple[ApiServer, str, tuple[str, int]]) -> None:
    _server, sock, tcp = served
    assert stat.S_ISSOCK(Path(sock).stat().st_mode)  # the stale file was replaced
    assert stat.S_IMODE(Path(sock).stat().st_mode) == 0o660
    assert client.get_json(sock, "/healthz")[0] == 200
    assert raw(tcp, b"GET /healthz HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200")
    assert raw(tcp, b"POST /v1/reconcile HTTP/1.0\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.0 403")
    assert client.request(sock, "/v1/reconcile", method="POST")[0] == 202


def test_stop_removes_the_socket(tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    server = ApiServer(App("edge1", Liveness(60), Recorder(), wake=lambda: None), [str(sock)], LIMITS)
    assert server.start() == [str(sock)]
    server.stop()
    assert not sock.exists()
    with pytest.raises(NotFound, match="no agent API socket"):
        client.request(str(sock), "/healthz")


def test_one_connection_more_than_allowed_gets_503_at_once(tmp_path: Path) -> None:
    limits = Limits(connections=2, io_timeout=5.0, deadline=10.0, poll=0.05)
    sock = str(tmp_path / "agent.sock")
    server = ApiServer(App("edge1", Liveness(60), Recorder(), wake=lambda: None), [sock], limits)
    server.start()
    idle = [socket.socket(socket.AF_UNIX) for _ in range(limits.connections)]
    try:
        for s in idle:
            s.connect(sock)
        deadline = time.monotonic() + 10
        while len(server.servers[0].open) < limits.connections:  # both accepted and holding their slots
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        assert raw(sock, b"").startswith(b"HTTP/1.0 503")  # answered at accept, before any request
        assert time.monotonic() - started < 2.0  # not after waiting for a slot (the idle ones hold them 5 s)
        for s in idle:
            s.close()
        deadline = time.monotonic() + 10
        while server.servers[0].open:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.get_json(sock, "/healthz")[0] == 200  # the slots came back
    finally:
        for s in idle:
            s.close()
        server.stop()


def test_a_client_dripping_bytes_is_cut_at_the_deadline(served: tuple[ApiServer, str, tuple[str, int]]) -> None:
    _server, sock, _tcp = served
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 4:
            try:
                s.sendall(b"G")  # under io_timeout apart, so only the whole-connection deadline stops it
            except OSError:
                closed = True
                break
            s.settimeout(0.3)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed
        assert LIMITS.deadline <= time.monotonic() - started < LIMITS.deadline + 1.0
    assert client.get_json(sock, "/healthz")[0] == 200


def test_a_silent_client_times_out(served: tuple[ApiServer, str, tuple[str, int]]) -> None:
    _server, sock, _tcp = served
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(sock)
        started = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - started < LIMITS.io_timeout + 0.5


def test_huge_headers_are_not_read(served: tuple[ApiServer, str, tuple[str, int]]) -> None:
    _server, sock, _tcp = served
    request = b"GET /healthz HTTP/1.0\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
    try:
        answer = raw(sock, request + b"\r\n")
    except (ConnectionResetError, BrokenPipeError):
        answer = b"reset"  # the server closed after 4 KiB while the client was still sending
    assert answer.startswith(b"HTTP/1.0 431") or answer == b"reset", answer[:100]  # never served as a request
    assert json.loads(client.request(sock, "/healthz")[1])["alive"] is True


def test_a_listener_that_cannot_bind_is_skipped(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    sock = tmp_path / "agent.sock"
    long = tmp_path / ("x" * 120) / "agent.sock"
    server = ApiServer(App("edge1", Liveness(60), Recorder(), wake=lambda: None),
                       [f"127.0.0.1:{port}", str(long), str(sock)], LIMITS)
    try:
        assert server.start() == [str(sock)]
    finally:
        server.stop()
        taken.close()


def test_client_says_when_no_agent_answers(tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()  # the file stays, nobody listens
    with pytest.raises(Transient, match="no agent answers"):
        client.request(str(path), "/healthz")
