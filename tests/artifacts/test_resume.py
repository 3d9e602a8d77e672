"""Interrupted and hostile downloads: resume after SIGKILL (real registry), endless data (a lying server)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.artifacts import ArtifactStore, Reference, RegistryClient
from reconciler.errors import IntegrityError
from tests.conftest import ROOT
from tests.services.registry import RegistryServer

pytestmark = pytest.mark.integration

BIG = 200 * 1024 * 1024


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_pull_resumes_after_sigkill_and_fetches_only_the_rest(registry: RegistryServer,
                                                              tmp_path: Path) -> None:
    big = tmp_path / "weights.bin"
    with open(big, "wb") as f:
        for _ in range(BIG // (8 * 1024 * 1024)):
            f.write(os.urandom(8 * 1024 * 1024))
    ref = Reference.parse(registry.ref("models/big", "v1"))
    pinned = str(ref.pinned(RegistryClient(None, None, deadline_seconds=60).push(ref, [big], {})))
    manifest = RegistryClient(None, None).get_manifest(Reference.parse(pinned))
    layer = manifest.layers[0]
    data = tmp_path / "data"
    ingest = data / "ingest" / layer.digest.split(":", 1)[1]
    command = [sys.executable, "-m", "reconciler", "pull", pinned, "--data-dir", str(data)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: ingest.exists() and ingest.stat().st_size >= 16 * 1024 * 1024, timeout=30)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    kept = ingest.stat().st_size
    assert 0 < kept < BIG, "the download finished before the kill: nothing left to resume"
    _wait_for(lambda: registry.blob_bytes_served(layer.digest) > 0)  # the cut request is logged
    served_first = registry.blob_bytes_served(layer.digest)

    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    active = Path(done.stdout.strip().splitlines()[-1])
    _wait_for(lambda: any(e.status == 206 for e in registry.access_entries()))
    served_second = registry.blob_bytes_served(layer.digest) - served_first
    assert served_second == BIG - kept  # only the rest, via a Range request
    assert [e.status for e in registry.access_entries() if e.path.endswith(layer.digest)][-1] == 206
    with open(active / "weights.bin", "rb") as f:
        assert "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == layer.digest
    assert not ingest.exists()


class _LyingRegistry(BaseHTTPRequestHandler):
    """Serves one manifest whose layer says SIZE bytes, then sends far more than that for the blob."""

    manifest: bytes = b""
    blob_prefix: bytes = b""
    sent: list[int] = []
    max_send = 64 * 1024 * 1024  # bounded, so the test ends even if the client never hangs up

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if "/manifests/" in self.path:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(self.manifest)))
            self.end_headers()
            self.wfile.write(self.manifest)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()  # no Content-Length: the body ends when we close
        sent = 0
        chunk = b"\xee" * 65536
        try:
            self.wfile.write(self.blob_prefix)
            sent = len(self.blob_prefix)
            while sent < self.max_send:
                self.wfile.write(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.sent.append(sent)
        self.close_connection = True


@pytest.fixture
def lying_registry() -> Iterator[tuple[str, type[_LyingRegistry]]]:
    handler = type("Handler", (_LyingRegistry,), {"sent": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _manifest(content: bytes) -> bytes:
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": "application/octet-stream", "digest": digest, "size": len(content),
                    "annotations": {"org.opencontainers.image.title": "model.bin"}}],
    }).encode()


def test_endless_blob_is_cut_off_at_its_size(lying_registry: tuple[str, type[_LyingRegistry]],
                                             tmp_path: Path) -> None:
    address, handler = lying_registry
    honest = os.urandom(1024 * 1024)
    handler.manifest, handler.blob_prefix = _manifest(honest), honest
    store = ArtifactStore(tmp_path / "d")
    started = time.monotonic()
    result = store.pull(f"{address}/models/det:v1", RegistryClient(None, None, deadline_seconds=10),
                        model="det", version="1")
    assert time.monotonic() - started < 5
    assert (result.path / "model.bin").read_bytes() == honest  # exactly the described bytes, no more
    assert result.bytes_downloaded == len(honest)


def test_endless_garbage_is_refused_without_filling_the_disk(lying_registry: tuple[str, type[_LyingRegistry]],
                                                             tmp_path: Path) -> None:
    address, handler = lying_registry
    expected = os.urandom(1024 * 1024)
    handler.manifest, handler.blob_prefix = _manifest(expected), b""
    store = ArtifactStore(tmp_path / "d")
    ref = f"{address}/models/det:v1"
    with pytest.raises(IntegrityError) as info:
        store.pull(ref, RegistryClient(None, None, deadline_seconds=10), model="det", version="1")
    digest = "sha256:" + hashlib.sha256(expected).hexdigest()
    garbage = "sha256:" + hashlib.sha256(b"\xee" * len(expected)).hexdigest()
    assert str(info.value) == f"{ref}: blob digest mismatch: expected {digest}, got {garbage}"
    assert list((tmp_path / "d" / "ingest").iterdir()) == []
    assert store.activated("det", "1") is None
