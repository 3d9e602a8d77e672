"""Registry scenarios against servers that misbehave at the HTTP level (slow, stalled, huge error bodies): the
deadline holds while bytes stream, a trickle is cut, and nothing unbounded is read."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from reconciler.artifacts.registry import RegistryClient
from reconciler.artifacts.store import ArtifactStore
from reconciler.errors import DeadlineExceeded, LockHeld, ReconcilerError, Transient
from tests.hardening.conftest import http_server

BLOB = bytes(range(256)) * 64  # 16 KiB


def manifest(content: bytes) -> bytes:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": "application/octet-stream", "digest": digest, "size": len(content),
                    "annotations": {"org.opencontainers.image.title": "model.bin"}}],
    }).encode()


class Trickle(BaseHTTPRequestHandler):
    """Serves the manifest at once and the blob one small piece every ``pause`` seconds."""

    pause = 0.5
    piece = 1
    stop = threading.Event()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if "/manifests/" in self.path:
            body = manifest(BLOB)
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        try:
            for i in range(0, len(BLOB), self.piece):
                if self.stop.wait(self.pause):
                    return
                self.wfile.write(BLOB[i:i + self.piece])
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture
def trickle() -> Iterator[tuple[str, type[Trickle]]]:
    handler = type("Handler", (Trickle,), {"stop": threading.Event()})
    try:
        with http_server(handler) as address:
            yield address, handler
    finally:
        handler.stop.set()


def test_scenario_03_deadline_holds_while_a_registry_sends_a_byte_at_a_time(
        trickle: tuple[str, type[Trickle]], tmp_path: Path) -> None:
    address, _ = trickle
    store = ArtifactStore(tmp_path / "d")
    client = RegistryClient(None, None, deadline_seconds=3, min_bytes_per_second=0)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline of 3s"):
        store.pull(f"{address}/models/det:v1", client, model="det", version="1")
    assert time.monotonic() - started < 5
    assert store.activated("det", "1") is None


def test_scenario_03_a_trickle_under_the_minimum_rate_is_cut_after_the_grace_period(
        trickle: tuple[str, type[Trickle]], tmp_path: Path) -> None:
    address, _ = trickle
    store = ArtifactStore(tmp_path / "d")
    client = RegistryClient(None, None, deadline_seconds=60, max_attempts=2, min_bytes_per_second=100,
                            slow_grace_seconds=1)
    started = time.monotonic()
    with pytest.raises(Transient, match="under the minimum of 100 B/s"):
        store.pull(f"{address}/models/det:v1", client, model="det", version="1")
    assert time.monotonic() - started < 10


def test_scenario_03_a_slow_but_steady_registry_within_the_limits_completes(
        trickle: tuple[str, type[Trickle]], tmp_path: Path) -> None:
    address, handler = trickle
    handler.pause, handler.piece = 0.01, 2048
    store = ArtifactStore(tmp_path / "d")
    result = store.pull(f"{address}/models/det:v1", RegistryClient(None, None, deadline_seconds=30),
                        model="det", version="1")
    assert (result.path / "model.bin").read_bytes() == BLOB


class Flood(BaseHTTPRequestHandler):
    """Answers every manifest request with an endless JSON error body (or, with ``bearer``, a 401 whose token
    realm sends an endless JSON answer); counts what it managed to send."""

    bearer = False
    sent: list[int] = []
    limit = 256 * 1024 * 1024

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.bearer and "/token" not in self.path:
            self.send_response(401)
            host = self.headers["Host"]
            self.send_header("Www-Authenticate", f'Bearer realm="http://{host}/token",service="reg"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200 if "/token" in self.path else 500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(b'{"errors": [')
            while sent < self.limit:
                self.wfile.write(b'{"code": "X", "message": "' + b"x" * 65000 + b'"},')
                sent += 65030
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.sent.append(sent)
        self.close_connection = True


@pytest.fixture
def flood() -> Iterator[tuple[str, type[Flood]]]:
    handler = type("Handler", (Flood,), {"sent": []})
    with http_server(handler) as address:
        yield address, handler


@pytest.mark.parametrize("bearer", [False, True], ids=["error-body", "token-answer"])
def test_scenario_04_endless_error_bodies_and_token_answers_are_read_to_a_cap(
        flood: tuple[str, type[Flood]], tmp_path: Path, bearer: bool) -> None:
    address, handler = flood
    handler.bearer = bearer
    store = ArtifactStore(tmp_path / "d")
    with pytest.raises(ReconcilerError):
        store.pull(f"{address}/models/det:v1", RegistryClient(None, None, deadline_seconds=20, max_attempts=1),
                   model="det", version="1")
    time.sleep(0.5)  # the server notices the hang-up
    assert handler.sent and max(handler.sent) < 16 * 1024 * 1024  # not the 256 MiB on offer


def test_store_lock_held_by_an_operator_times_out_into_waiting(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = ArtifactStore(tmp_path / "d")
    store.lock_timeout = 1.0
    (tmp_path / "d").mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
                               str(tmp_path / "d" / ".store.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(LockHeld, match="locked by another process"):
            store.gc([])
        assert time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait()
    store.gc([])  # free again


def test_scenario_03_pull_command_keeps_its_timeout(trickle: tuple[str, type[Trickle]], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.main import main

    address, _ = trickle
    started = time.monotonic()
    code = main(["pull", f"{address}/models/det:v1", "--data-dir", str(tmp_path / "d"), "--timeout", "3",
                 "--min-rate", "0"])
    assert code == 1 and time.monotonic() - started < 6
    assert "deadline of 3s" in capsys.readouterr().err
