"""The API's listeners: the standard library's HTTP server, one thread per connection, with limits so that a
slow or hostile client cannot exhaust the agent.

- at most ``connections`` at once per listener (16); one more gets ``503`` at once and is closed;
- every socket read or write times out after ``io_timeout`` seconds (5), and a connection older than
  ``deadline`` (10 s) is shut down whatever it is doing (a client dripping one byte at a time);
- at most ``request_bytes`` (16 KiB) of request line and headers are read (no request has a body worth reading);
- HTTP/1.0, one request per connection.

The unix socket is created under a temporary name, given mode 0660, and renamed into place, so it is never
reachable with looser permissions.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from reconciler.api.routes import App

log = logging.getLogger("reconciler.api")

SOCKET_MODE = 0o660
_BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
         b'{"error": "too many connections"}\n')


@dataclass(frozen=True)
class Limits:
    connections: int = 16
    io_timeout: float = 5.0
    deadline: float = 10.0
    request_bytes: int = 16 * 1024
    poll: float = 0.5  # how often late connections are looked for


class _Limited:
    """The request's read side: past ``limit`` bytes it raises ``LineTooLong`` (answered 431 and closed)."""

    def __init__(self, raw: Any, limit: int) -> None:
        self.raw = raw
        self.left = limit

    def readline(self, size: int = -1) -> bytes:
        line: bytes = self.raw.readline(self.left + 1 if size < 0 else min(size, self.left + 1))
        return self._count(line)

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(self.left + 1 if size < 0 else min(size, self.left + 1))
        return self._count(data)

    def _count(self, data: bytes) -> bytes:
        self.left -= len(data)
        if self.left < 0:
            raise http.client.LineTooLong("request line and headers")
        return data

    def close(self) -> None:
        self.raw.close()


class _Handler(BaseHTTPRequestHandler):
    server: _Bounded
    server_version = "reconciler-agent"
    sys_version = ""

    def setup(self) -> None:
        self.request.settimeout(self.server.limits.io_timeout)
        super().setup()
        self.rfile = _Limited(self.rfile, self.server.limits.request_bytes)  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except http.client.LineTooLong:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_error(431, "request too large")
                self.wfile.flush()
            _drain(self.request)

    def _serve(self) -> None:
        app = self.server.app
        try:
            response = app.answer(self.command, self.path, local=self.server.local)
        except Exception:  # a bug in one answer must not take the API (or the agent) down
            log.exception("API %s %s failed", self.command, self.path)
            self.send_error(500)
            return
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def address_string(self) -> str:
        return "unix" if self.server.local else str(self.client_address[0])

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("API %s: " + format, self.address_string(), *args)


class _Bounded(socketserver.ThreadingMixIn, socketserver.BaseServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, sock: socket.socket, app: App, local: bool, limits: Limits) -> None:
        socketserver.BaseServer.__init__(self, sock.getsockname(), _Handler)
        self.socket = sock
        self.app = app
        self.local = local
        self.limits = limits
        self.slots = threading.BoundedSemaphore(limits.connections)
        self.open: dict[socket.socket, float] = {}
        self.open_lock = threading.Lock()

    def fileno(self) -> int:
        return self.socket.fileno()

    def get_request(self) -> tuple[socket.socket, Any]:
        return self.socket.accept()

    def server_close(self) -> None:
        self.socket.close()

    def shutdown_request(self, request: Any) -> None:
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
        request.close()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            request.setblocking(False)
            with contextlib.suppress(OSError):
                request.send(_BUSY)
            _drain(request)
            self.shutdown_request(request)
            return
        with self.open_lock:
            self.open[request] = time.monotonic()
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.open_lock:
                self.open.pop(request, None)
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer (reset, broken pipe, timeout): its problem, not a traceback
        log.debug("API connection ended early", exc_info=True)

    def service_actions(self) -> None:
        """Between accepts (every poll interval): shut connections down that outlived their deadline."""
        now = time.monotonic()
        with self.open_lock:
            late = [s for s, started in self.open.items() if now - started > self.limits.deadline]
        for s in late:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def _drain(sock: socket.socket, limit: int = 256 * 1024) -> None:
    """Read what the client already sent (without waiting), so that closing does not reset the connection
    before it reads our answer."""
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        while limit > 0:
            chunk = sock.recv(65536)
            if not chunk:
                break
            limit -= len(chunk)


def _unix_socket(path: Path, backlog: int) -> socket.socket:
    if len(os.fsencode(path)) >= 108:
        raise OSError(f"unix socket path too long (108 bytes at most): {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        os.chmod(tmp, SOCKET_MODE)
        os.replace(tmp, path)  # a stale socket of an agent that died is replaced (we hold the data dir lock)
        sock.listen(backlog)
    except OSError:
        sock.close()
        tmp.unlink(missing_ok=True)
        raise
    return sock


def _tcp_socket(address: str, backlog: int) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def is_unix(entry: str) -> bool:
    return entry.startswith(("/", ".")) or ":" not in entry


class ApiServer:
    """Every listener of ``listen`` in a thread of its own; a listener that cannot bind is logged, and the agent
    goes on without it (running the models matters more than answering about them)."""

    def __init__(self, app: App, listen: Sequence[str], limits: Limits | None = None) -> None:
        self.app = app
        self.listen = tuple(listen)
        self.limits = limits or Limits()
        self.servers: list[_Bounded] = []
        self._threads: list[threading.Thread] = []
        self._unix_paths: list[tuple[Path, int]] = []

    def start(self) -> list[str]:
        """Bind and serve; returns where it listens."""
        bound = []
        for entry in self.listen:
            try:
                if is_unix(entry):
                    sock = _unix_socket(Path(entry), self.limits.connections)
                    self._unix_paths.append((Path(entry), os.stat(entry).st_ino))
                else:
                    sock = _tcp_socket(entry, self.limits.connections)
            except (OSError, ValueError) as exc:
                log.error("local API: cannot listen on %s: %s", entry, exc)
                continue
            server = _Bounded(sock, self.app, local=is_unix(entry), limits=self.limits)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": self.limits.poll},
                                      daemon=True,
                                      name=f"api {entry}")
            thread.start()
            self.servers.append(server)
            self._threads.append(thread)
            bound.append(entry if is_unix(entry) else f"{sock.getsockname()[0]}:{sock.getsockname()[1]}")
        if bound:
            log.info("local API on %s", ", ".join(bound))
        return bound

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for path, inode in self._unix_paths:
            with contextlib.suppress(OSError):
                if os.stat(path).st_ino == inode:  # still ours, not a newer agent's
                    path.unlink()
        self.servers.clear()
