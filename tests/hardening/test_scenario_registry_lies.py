"""Registry scenarios 2, 6 and 11 against a registry that lies at the HTTP level: it ignores Range, serves
another manifest for a pinned digest, or lacks one of the layers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from reconciler.artifacts.registry import RegistryClient
from reconciler.artifacts.store import ArtifactStore
from reconciler.errors import IntegrityError, NotFound
from tests.hardening.conftest import http_server

A = b"layer a " * 4096
B = b"layer b " * 4096


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest(*layers: tuple[str, bytes]) -> bytes:
    return json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": "application/octet-stream", "digest": sha(data), "size": len(data),
                    "annotations": {"org.opencontainers.image.title": title}} for title, data in layers],
    }).encode()


class Liar(BaseHTTPRequestHandler):
    manifest = b""
    blobs: dict[str, bytes] = {}
    ranges: list[str | None] = []

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if "/manifests/" in self.path:
            self._send(200, self.manifest, "application/vnd.oci.image.manifest.v1+json")
            return
        digest = self.path.rsplit("/", 1)[-1]
        self.ranges.append(self.headers.get("Range"))
        if digest not in self.blobs:
            self._send(404, b'{"errors": [{"code": "BLOB_UNKNOWN"}]}', "application/json")
            return
        self._send(200, self.blobs[digest], "application/octet-stream")  # never 206, whatever Range says


@pytest.fixture
def liar() -> Iterator[tuple[str, type[Liar]]]:
    handler = type("Handler", (Liar,), {"blobs": {}, "ranges": []})
    with http_server(handler) as address:
        yield address, handler


def test_scenario_02_registry_that_ignores_range_gives_the_whole_blob_once(
        liar: tuple[str, type[Liar]], tmp_path: Path) -> None:
    address, handler = liar
    handler.manifest, handler.blobs = manifest(("a.bin", A)), {sha(A): A}
    store = ArtifactStore(tmp_path / "d")
    (tmp_path / "d" / "ingest").mkdir(parents=True)
    (tmp_path / "d" / "ingest" / sha(A)[7:]).write_bytes(A[:10_000])  # a download cut earlier
    result = store.pull(f"{address}/models/m:v1", RegistryClient(None, None, deadline_seconds=10),
                        model="m", version="1")
    assert handler.ranges == ["bytes=10000-"]  # asked to resume, was given everything from byte 0
    assert (result.path / "a.bin").read_bytes() == A


def test_scenario_06_another_manifest_for_a_pinned_digest_is_refused(
        liar: tuple[str, type[Liar]], tmp_path: Path) -> None:
    address, handler = liar
    pinned = sha(manifest(("a.bin", A)))
    handler.manifest, handler.blobs = manifest(("b.bin", B)), {sha(B): B}  # the registry swapped it
    store = ArtifactStore(tmp_path / "d")
    with pytest.raises(IntegrityError, match=f"manifest digest mismatch: expected {pinned}"):
        store.pull(f"{address}/models/m@{pinned}", RegistryClient(None, None, deadline_seconds=10),
                   model="m", version="1")
    assert handler.ranges == []  # no blob of the swapped manifest was fetched
    assert store.activated("m", "1") is None


def test_scenario_11_one_of_two_blobs_unavailable_activates_nothing(
        liar: tuple[str, type[Liar]], tmp_path: Path) -> None:
    address, handler = liar
    handler.manifest, handler.blobs = manifest(("a.bin", A), ("b.bin", B)), {sha(A): A}
    store = ArtifactStore(tmp_path / "d")
    with pytest.raises(NotFound, match="BLOB_UNKNOWN"):
        store.pull(f"{address}/models/m:v1", RegistryClient(None, None, deadline_seconds=10), model="m", version="1")
    assert store.activated("m", "1") is None
    assert not (tmp_path / "d" / "models" / "m" / "1").exists()
    handler.blobs[sha(B)] = B  # back: the next pull fetches only what is missing
    handler.ranges.clear()
    result = store.pull(f"{address}/models/m:v1", RegistryClient(None, None, deadline_seconds=10),
                        model="m", version="1")
    assert len(handler.ranges) == 1
    assert (result.path / "b.bin").read_bytes() == B and (result.path / "a.bin").read_bytes() == A
