"""registries.<name>.mirrors: pulls go through a site's pull-through cache (Debian's docker-registry with
proxy.remoteurl in front of a second docker-registry), fall back to the registry when the cache is down, and
pass over a mirror that serves wrong bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reconciler.artifacts import ArtifactStore, Reference, RegistryClient
from reconciler.model import RegistryConfig
from tests.agentlab import publish
from tests.services.registry import RegistryServer, run_registry
from tests.services.webserver import run_httpd

pytestmark = pytest.mark.integration


def origin_config(origin: RegistryServer, *mirrors: str) -> RegistryConfig:
    host, port = origin.address.rsplit(":", 1)
    return RegistryConfig("repo", host, int(port), mirrors=mirrors)


def blob_gets(server: RegistryServer) -> list[str]:
    return [e.path for e in server.access_entries() if e.method == "GET" and "/blobs/" in e.path and e.status == 200]


def test_pulls_go_through_the_cache_and_survive_it_being_down(tmp_path: Path) -> None:
    with run_registry(tmp_path / "origin") as origin:
        ref = publish(origin.address, tmp_path, "models/counter", "1.0", b"weights " * 5000)
        digest = Reference.parse(ref).digest
        with run_registry(tmp_path / "cache", proxy=origin.url) as cache:
            client = RegistryClient(origin_config(origin, cache.address), None, deadline_seconds=30)
            result = ArtifactStore(tmp_path / "dev1").pull(ref, client, model="counter", version="1.0")
            assert not result.cached and result.manifest_digest == digest
            assert set(client.mirrors.served.values()) == {cache.address} and digest in client.mirrors.served
            assert blob_gets(cache) and (tmp_path / "dev1/models/counter/1.0/serve.py").exists()
            served_by_origin = len(blob_gets(origin))
            # a second device at the same site: the cache answers from its own storage, the origin sees nothing
            client2 = RegistryClient(origin_config(origin, cache.address), None, deadline_seconds=30)
            ArtifactStore(tmp_path / "dev2").pull(ref, client2, model="counter", version="1.0")
            assert len(blob_gets(origin)) == served_by_origin
        # the cache is down: the pull still succeeds, from the origin, and says why the mirror was passed over
        client3 = RegistryClient(origin_config(origin, cache.address), None, deadline_seconds=30)
        result = ArtifactStore(tmp_path / "dev3").pull(ref, client3, model="counter", version="1.0")
        assert result.manifest_digest == digest and client3.mirrors.served == {}
        assert client3.mirrors.failures and client3.mirrors.failures[0].startswith(cache.address)


def test_a_mirror_serving_wrong_bytes_is_passed_over(tmp_path: Path) -> None:
    with run_registry(tmp_path / "origin") as origin:
        ref = publish(origin.address, tmp_path, "models/counter", "1.0", b"honest weights")
        parsed = Reference.parse(ref)
        root = tmp_path / "liar"
        (root / "v2/models/counter/manifests").mkdir(parents=True)
        # a static web server that answers the manifest's path with something else
        (root / f"v2/models/counter/manifests/{parsed.digest}").write_bytes(b'{"schemaVersion": 2, "layers": []}')
        with run_httpd(root) as liar:
            client = RegistryClient(origin_config(origin, f"127.0.0.1:{liar.port}"), None, deadline_seconds=30)
            result = ArtifactStore(tmp_path / "dev").pull(ref, client, model="counter", version="1.0")
        assert result.manifest_digest == parsed.digest and client.mirrors.served == {}
        assert "digest mismatch" in client.mirrors.failures[0]
        data = (tmp_path / "dev/models/counter/1.0/weights.bin").read_bytes()
        assert hashlib.sha256(data).hexdigest() == hashlib.sha256(b"honest weights").hexdigest()
