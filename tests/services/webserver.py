"""A real static web server on loopback: busybox's ``httpd`` (Debian ``busybox-static``), serving a temp dir.

It answers conditional requests the way nginx does (an ETag and Last-Modified from the file's mtime and size,
304 for ``If-None-Match``), which is what the change beacon relies on.  ``run_httpd`` is free of pytest so
that ``bench/`` can use it too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

BUSYBOX = shutil.which("busybox") or "/bin/busybox"


@dataclass
class WebServer:
    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            return
        self.proc = subprocess.Popen([BUSYBOX, "httpd", "-f", "-p", f"127.0.0.1:{self.port}", "-h", str(self.root)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError(f"busybox httpd exited with {self.proc.returncode}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("busybox httpd did not listen in time")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def run_httpd(root: Path) -> Iterator[WebServer]:
    root.mkdir(parents=True, exist_ok=True)
    server = WebServer(root, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def web_server(tmp_path: Path) -> Iterator[WebServer]:
    with run_httpd(tmp_path / "www") as server:
        yield server
