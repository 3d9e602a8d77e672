"""A client of the local API over its unix socket (``device-status``, tests, bench)."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from reconciler.errors import AuthError, NotFound, Transient


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def request(socket_path: str, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, bytes]:
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    except FileNotFoundError:
        raise NotFound(f"{socket_path}: no agent API socket here (is the agent running with api.listen?)") from None
    except ConnectionRefusedError:
        raise Transient(f"{socket_path}: no agent answers on this socket (is reconciler-agent running?)") from None
    except PermissionError:
        raise AuthError(f"{socket_path}: permission denied (the socket is mode 0660: join its group)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise Transient(f"{socket_path}: {method} {path} failed: {exc}") from None
    finally:
        conn.close()


def get_json(socket_path: str, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    status, body = request(socket_path, path, timeout=timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        raise Transient(f"{socket_path}: {path} answered something that is not JSON") from None
