"""The artifact store against a real registry (Debian's docker-registry on loopback)."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

import pygit2
import pytest

from reconciler.artifacts import ArtifactStore, Reference, RegistryClient
from reconciler.credentials import Credential
from reconciler.errors import AuthError, IntegrityError, NotFound, Stalled, Transient, Waiting
from reconciler.main import main
from reconciler.model import RegistryConfig
from tests.services.registry import RegistryServer

pytestmark = pytest.mark.integration


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _push(server: RegistryServer, repo: str, tag: str, files: list[Path]) -> str:
    client = RegistryClient(None, None, deadline_seconds=30)
    return client.push(Reference.parse(server.ref(repo, tag)), files, {})


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_publish_then_pull_round_trip(registry: RegistryServer, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    checkout = tmp_path / "checkout"
    repo = pygit2.init_repository(str(checkout))
    _write(checkout / "README", b"model sources\n")
    repo.index.add("README")
    repo.index.write()
    sig = pygit2.Signature("Test Operator", "operator@example.com")
    commit = repo.create_commit("HEAD", sig, sig, "initial", repo.index.write_tree(), [])
    weights = _write(checkout / "weights.bin", os.urandom(300_000))
    config = _write(checkout / "config.json", b'{"threshold": 0.8}')
    _write(checkout / "bundle" / "serve.py", b"print('serving')\n")
    monkeypatch.chdir(checkout)

    code, out, err = _cli(capsys, "publish", str(weights), str(config), "bundle", "--to",
                          registry.ref("models/det", "v1"), "--annotation", "team=vision",
                          "--requirement", "pytorch", "--requirement", "opencv")
    assert code == 0, err
    pinned = out.strip().splitlines()[-1]
    assert pinned.startswith(f"{registry.address}/models/det@sha256:")

    manifest = RegistryClient(None, None).get_manifest(Reference.parse(pinned))
    annotations = dict(manifest.annotations)
    assert annotations["org.opencontainers.image.revision"] == str(commit)
    assert annotations["dev.reconciler.requirements"] == "pytorch,opencv"
    assert annotations["team"] == "vision"
    assert annotations["org.opencontainers.image.created"].endswith("Z")

    data = tmp_path / "data"
    code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(data), "--model", "det", "--version", "1")
    assert code == 0, err
    active = Path(out.strip().splitlines()[-1])
    assert active == data / "models" / "det" / "1"
    assert (active / "weights.bin").read_bytes() == weights.read_bytes()
    assert (active / "config.json").read_bytes() == config.read_bytes()
    assert (active / "bundle" / "serve.py").read_text() == "print('serving')\n"
    assert "MiB/s" not in err  # no progress line when stderr is not a terminal

    # Pinned and already active: the registry sees no request at all.
    requests_before = len(registry.access_entries())
    code, out, _ = _cli(capsys, "pull", pinned, "--data-dir", str(data), "--model", "det", "--version", "1")
    assert code == 0 and "already active" in out and out.strip().splitlines()[-1] == str(active)
    assert len(registry.access_entries()) == requests_before


def test_secure_registry_basic_auth_and_tls(secure_registry: RegistryServer, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert secure_registry.username and secure_registry.password
    monkeypatch.setenv("RECONCILER_CRED_FLEET_USERNAME", secure_registry.username)
    monkeypatch.setenv("RECONCILER_CRED_FLEET_PASSWORD", secure_registry.password)
    payload = _write(tmp_path / "model.onnx", os.urandom(50_000))
    tls = ["--ca-file", str(secure_registry.ca_file), "--credentials", "fleet"]
    target = secure_registry.ref("secure/m", "v1")
    code, out, err = _cli(capsys, "publish", str(payload), "--to", target, *tls)
    assert code == 0, err
    pinned = out.strip().splitlines()[-1]
    code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(tmp_path / "d"), *tls)
    assert code == 0, err
    assert (Path(out.strip().splitlines()[-1]) / "model.onnx").read_bytes() == payload.read_bytes()

    # Wrong password: terminal, says who was refused, never shows a secret.
    wrong = "Wr0ng-but-secret-pass"
    monkeypatch.setenv("RECONCILER_CRED_FLEET_PASSWORD", wrong)
    started = time.monotonic()
    code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(tmp_path / "d2"), *tls)
    assert code == 1 and time.monotonic() - started < 5
    assert "refused the credentials of credential 'fleet'" in err
    assert wrong not in out + err and secure_registry.password not in out + err
    config = RegistryConfig("r", "127.0.0.1", int(secure_registry.address.split(":")[1]),
                            ca_file=str(secure_registry.ca_file))
    with pytest.raises(AuthError) as info:
        RegistryClient(config, Credential("fleet", secure_registry.username, wrong)).get_manifest(
            Reference.parse(pinned))
    assert wrong not in str(info.value)

    # No credentials at all: still a clear terminal error.
    with pytest.raises(AuthError, match="anonymous access"):
        RegistryClient(config, None).get_manifest(Reference.parse(pinned))
    # A certificate the CA bundle does not vouch for is terminal and says what to configure.
    other_ca = RegistryConfig("r", "127.0.0.1", config.port, ca_file="/etc/ssl/certs/ca-certificates.crt")
    started = time.monotonic()
    with pytest.raises(Stalled, match=r"TLS verification failed .*caFile"):
        RegistryClient(other_ca, None, deadline_seconds=5).get_manifest(Reference.parse(pinned))
    assert time.monotonic() - started < 2  # terminal: not retried
    # skipTLSVerify gets through TLS (and then needs credentials).
    with pytest.raises(AuthError):
        skip = RegistryConfig("r", "127.0.0.1", config.port, skip_tls_verify=True)
        RegistryClient(skip, None).get_manifest(Reference.parse(pinned))


def test_unknown_tag_is_terminal_not_found(registry: RegistryServer, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _push(registry, "models/det", "v1", [_write(tmp_path / "a.bin", b"a")])
    ref = registry.ref("models/det", "nope")
    with pytest.raises(NotFound, match="MANIFEST_UNKNOWN"):
        ArtifactStore(tmp_path / "d").pull(ref, RegistryClient(None, None), model="det", version="x")
    code, _, err = _cli(capsys, "pull", ref, "--data-dir", str(tmp_path / "d"))
    assert code == 1 and f"manifest {ref}: not found" in err


def test_registry_down_fails_transient_within_the_deadline(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    blackhole = socket.socket()  # accepts connections (backlog) but never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(8)
    try:
        for port in (dead_port, blackhole.getsockname()[1]):
            client = RegistryClient(None, None, deadline_seconds=2.0, max_attempts=10)
            started = time.monotonic()
            with pytest.raises(Transient) as info:
                ArtifactStore(tmp_path / "d").pull(f"127.0.0.1:{port}/models/det:v1", client,
                                                   model="det", version="1")
            assert time.monotonic() - started < 4.0
            assert f"127.0.0.1:{port}" in str(info.value)
    finally:
        blackhole.close()


def test_corrupted_blob_is_detected_and_never_activated(registry: RegistryServer, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    digest = _push(registry, "models/det", "v1", [_write(tmp_path / "w.bin", data)])
    manifest = RegistryClient(None, None).get_manifest(Reference.parse(registry.ref("models/det", digest)))
    layer = manifest.layers[0]
    stored = registry.blob_path(layer.digest)
    stored.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])  # same size, one byte flipped

    store = ArtifactStore(tmp_path / "d")
    ref = registry.ref("models/det", "v1")
    with pytest.raises(IntegrityError) as info:
        store.pull(ref, RegistryClient(None, None), model="det", version="1")
    message = str(info.value)
    assert ref in message and layer.digest in message and "got sha256:" in message
    assert store.activated("det", "1") is None
    assert not store.has_blob(layer.digest)
    assert list((tmp_path / "d" / "ingest").iterdir()) == []


def test_shared_layer_is_fetched_once_across_versions(registry: RegistryServer, tmp_path: Path) -> None:
    shared = _write(tmp_path / "src" / "backbone.bin", os.urandom(400_000))
    head1 = _write(tmp_path / "v1" / "head.bin", b"head one")
    head2 = _write(tmp_path / "v2" / "head.bin", b"head two, longer")
    _push(registry, "models/det", "v1", [shared, head1])
    _push(registry, "models/det", "v2", [shared, head2])
    store = ArtifactStore(tmp_path / "d")
    client = RegistryClient(None, None)
    r1 = store.pull(registry.ref("models/det", "v1"), client, model="det", version="1")
    r2 = store.pull(registry.ref("models/det", "v2"), client, model="det", version="2")
    assert r1.bytes_downloaded == 400_000 + len(b"head one")
    assert r2.bytes_downloaded == len(b"head two, longer")
    assert registry.blob_bytes_served() == 400_000 + len(b"head one") + len(b"head two, longer")
    assert (r2.path / "backbone.bin").read_bytes() == shared.read_bytes()


def test_gc_keeps_the_previous_version(registry: RegistryServer, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = ArtifactStore(tmp_path / "d")
    client = RegistryClient(None, None)
    results = {}
    for v in ("1", "2", "3"):
        _push(registry, "models/det", f"v{v}", [_write(tmp_path / v / "w.bin", os.urandom(100_000))])
        results[v] = store.pull(registry.ref("models/det", f"v{v}"), client, model="det", version=v)
    gone = store.gc([("det", "3")], keep_previous=1)
    assert gone.removed_versions == (("det", "1"),)
    assert store.activated("det", "1") is None
    assert store.activated("det", "2") and store.activated("det", "3")
    assert gone.freed_bytes >= 100_000
    assert not store.has_blob(results["1"].manifest_digest)
    assert store.verify() == []

    code, out, _ = _cli(capsys, "store", "gc", "--data-dir", str(tmp_path / "d"), "--keep", "det=3",
                        "--keep-previous", "0")
    assert code == 0 and "removed det 2" in out
    assert re.search(r"freed 9[89]\.\d KiB \(1 version\(s\), 2 blob\(s\)\)", out), out
    assert [(m, v) for m, v, _ in store.versions()] == [("det", "3")]
    assert len(list((tmp_path / "d" / "blobs" / "sha256").iterdir())) == 2  # layer + manifest


def test_verify_names_a_tampered_file_and_repair_restores_it(registry: RegistryServer, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    original = os.urandom(100_000)
    _push(registry, "models/det", "v1", [_write(tmp_path / "w.bin", original)])
    data = tmp_path / "d"
    result = ArtifactStore(data).pull(registry.ref("models/det", "v1"), RegistryClient(None, None),
                                      model="det", version="1")
    tampered = result.path / "w.bin"
    os.chmod(tampered, 0o644)
    with open(tampered, "r+b") as f:
        f.write(b"EVIL")

    code, out, err = _cli(capsys, "store", "verify", "--data-dir", str(data))
    assert code == 1
    assert "models/det/1/w.bin: expected sha256:" in out
    code, out, err = _cli(capsys, "store", "verify", "--data-dir", str(data), "--repair")
    assert code == 0, err
    assert (result.path / "w.bin").read_bytes() == original
    code, out, _ = _cli(capsys, "store", "verify", "--data-dir", str(data))
    assert code == 0 and "matches its digest" in out


def test_new_digest_for_the_same_version_replaces_it(registry: RegistryServer, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "d")
    client = RegistryClient(None, None)
    _push(registry, "models/det", "stable", [_write(tmp_path / "a" / "w.bin", b"old weights")])
    first = store.pull(registry.ref("models/det", "stable"), client, model="det", version="stable")
    _push(registry, "models/det", "stable", [_write(tmp_path / "b" / "w.bin", b"new weights")])
    second = store.pull(registry.ref("models/det", "stable"), client, model="det", version="stable")
    assert first.manifest_digest != second.manifest_digest and not second.cached
    assert (second.path / "w.bin").read_bytes() == b"new weights"
    version_dirs = [p.name for p in (tmp_path / "d" / "models" / "det").iterdir() if p.name.startswith(".")]
    assert len(version_dirs) == 1  # the old version dir went away after the switch


def test_disk_budget_fails_before_downloading(registry: RegistryServer, tmp_path: Path) -> None:
    _push(registry, "models/det", "v1", [_write(tmp_path / "w.bin", os.urandom(10_000))])
    store = ArtifactStore(tmp_path / "d")
    store.reserve_bytes = 1 << 60
    with pytest.raises(Waiting, match="not enough disk space to pull"):
        store.pull(registry.ref("models/det", "v1"), RegistryClient(None, None), model="det", version="1")
    assert registry.blob_bytes_served() == 0
