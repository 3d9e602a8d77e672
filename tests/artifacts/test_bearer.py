"""Bearer-token auth against the real registry: distribution 2.8 with ``auth: token`` and a real issuer.

The registry accepts only RS256 JWTs signed by the issuer's key (tests/services/tokenauth.py); the client
finds the realm in the 401 challenge and asks it for a token with the device's credentials, or presents a
pre-issued token as it is.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
import yaml

from reconciler.artifacts import ArtifactStore, Reference, RegistryClient
from reconciler.credentials import Credential
from reconciler.errors import AuthError, Transient
from reconciler.main import main
from tests.services.registry import RegistryServer, free_port, run_registry
from tests.services.tokenauth import Scope, TokenIssuer

pytestmark = pytest.mark.integration

REPO = "models/det"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _credentials_file(directory: Path, name: str, *, username: str | None = None, password: str | None = None,
                      token: str | None = None) -> Path:
    """A credentials file as the agent configuration holds them: secrets in files of their own."""
    entry: dict[str, str] = {}
    if username is not None:
        entry["username"] = username
    if password is not None:
        entry["passwordFile"] = str(_write(directory / f"{name}.password", password.encode() + b"\n"))
    if token is not None:
        entry["tokenFile"] = str(_write(directory / f"{name}.token", token.encode() + b"\n"))
    path = directory / "credentials.yaml"
    path.write_text(yaml.safe_dump({"credentials": {name: entry}}))
    return path


def _user(server: RegistryServer) -> Credential:
    return Credential("fleet", server.username, server.password)


def _push(server: RegistryServer, tag: str, files: list[Path]) -> str:
    client = RegistryClient(None, _user(server), deadline_seconds=30)
    return client.push(Reference.parse(server.ref(REPO, tag)), files, {})


def test_publish_and_pull_through_token_auth(token_registry: RegistryServer, token_issuer: TokenIssuer,
                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert token_registry.username and token_registry.password
    creds = _credentials_file(tmp_path / "secrets", "fleet", username=token_registry.username,
                              password=token_registry.password)
    access = ["--credentials", "fleet", "--credentials-file", str(creds)]
    weights = _write(tmp_path / "src" / "weights.bin", os.urandom(300_000))
    config = _write(tmp_path / "src" / "config.json", b'{"threshold": 0.8}')

    code, out, err = _cli(capsys, "publish", str(weights), str(config), "--to", token_registry.ref(REPO, "v1"),
                          *access)
    assert code == 0, err
    pinned = out.strip().splitlines()[-1]
    assert pinned.startswith(f"{token_registry.address}/{REPO}@sha256:")
    published = token_issuer.requests
    assert published and all(r.status == 200 and r.account == token_registry.username for r in published)
    # The registry lists the actions in no fixed order (push,pull or pull,push).
    asked = {(s.type, s.name, frozenset(s.actions)) for r in published for s in map(Scope.parse, r.scopes)}
    assert ("repository", REPO, frozenset({"pull", "push"})) in asked, published

    data = tmp_path / "data"
    served_before = len(token_registry.access_entries())
    code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(data), "--model", "det", "--version", "1",
                          *access)
    assert code == 0, err
    active = Path(out.strip().splitlines()[-1])
    assert (active / "weights.bin").read_bytes() == weights.read_bytes()
    assert (active / "config.json").read_bytes() == config.read_bytes()

    # The pull asked the realm once, for exactly what it needs: read access to this repository.
    pulled = token_issuer.requests[len(published):]
    assert [(r.account, r.service, r.scopes, r.status) for r in pulled] == [
        (token_registry.username, token_issuer.service, (f"repository:{REPO}:pull",), 200)
    ]
    # One challenge, then the manifest and both blobs served with that one token.
    served = token_registry.access_entries()[served_before:]
    assert [e.status for e in served] == [401, 200, 200, 200], served
    assert token_registry.blob_bytes_served() >= 300_000
    secrets = [token_registry.password, *token_issuer.issued]
    assert token_issuer.issued and not any(s in out + err for s in secrets)

    # The registry really demands a token: anonymous access is refused, and the realm was asked for one.
    with pytest.raises(AuthError, match=r"refused anonymous access \(HTTP 401"):
        RegistryClient(None, None).get_manifest(Reference.parse(pinned))
    assert token_issuer.requests[-1].account is None and token_issuer.requests[-1].status == 401


def test_wrong_password_is_terminal_and_shows_no_secret(token_registry: RegistryServer,
                                                        token_issuer: TokenIssuer, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert token_registry.username and token_registry.password
    digest = _push(token_registry, "v1", [_write(tmp_path / "w.bin", os.urandom(10_000))])
    pinned = token_registry.ref(REPO, digest)
    wrong = "Wr0ng-but-secret-pass"
    creds = _credentials_file(tmp_path / "secrets", "fleet", username=token_registry.username, password=wrong)
    before = len(token_issuer.requests)

    started = time.monotonic()
    code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(tmp_path / "d"),
                          "--credentials", "fleet", "--credentials-file", str(creds))
    assert code == 1 and time.monotonic() - started < 5  # terminal: not retried
    assert f"manifest {pinned}: registry {token_registry.address} refused the credentials of credential " \
           "'fleet' (HTTP 401" in err
    for secret in (wrong, token_registry.password, *token_issuer.issued):
        assert secret not in out + err
    # The realm saw the wrong password once and refused it; no token was handed out for it.
    refused = token_issuer.requests[before:]
    assert [(r.account, r.status) for r in refused] == [(token_registry.username, 401)]
    assert [p for p in (tmp_path / "d").rglob("*") if p.is_file() and p.name != ".store.lock"] == []

    with pytest.raises(AuthError) as info:
        ArtifactStore(tmp_path / "d2").pull(pinned, RegistryClient(None, Credential("fleet", "fleet-operator", wrong)),
                                            model="det", version="1")
    assert wrong not in str(info.value) and "credential 'fleet'" in str(info.value)


def test_pre_issued_token_pulls_without_asking_the_realm(token_registry: RegistryServer,
                                                         token_issuer: TokenIssuer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    payload = _write(tmp_path / "model.onnx", os.urandom(50_000))
    digest = _push(token_registry, "v1", [payload])
    pinned = token_registry.ref(REPO, digest)
    token = token_issuer.issue("device-7", [Scope("repository", REPO, ("pull",))])
    creds = _credentials_file(tmp_path / "secrets", "device", token=token)
    before = len(token_issuer.requests)

    code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(tmp_path / "d"),
                          "--credentials", "device", "--credentials-file", str(creds))
    assert code == 0, err
    assert (Path(out.strip().splitlines()[-1]) / "model.onnx").read_bytes() == payload.read_bytes()
    assert token_issuer.requests[before:] == []  # presented as it is, never traded at the realm
    assert token not in out + err

    # A token for another repository, or one signed by a key the registry does not trust, is refused:
    # a terminal error that names the credential and shows no token.
    stranger = TokenIssuer(tmp_path / "stranger", {})
    stranger.make_key()
    for name, bad in {
        "other-repo": token_issuer.issue("device-7", [Scope("repository", "models/other", ("pull",))]),
        "forged": stranger.issue("device-7", [Scope("repository", REPO, ("pull",))]),
    }.items():
        creds = _credentials_file(tmp_path / name, name, token=bad)
        code, out, err = _cli(capsys, "pull", pinned, "--data-dir", str(tmp_path / f"d-{name}"),
                              "--credentials", name, "--credentials-file", str(creds))
        assert code == 1, name
        assert f"refused the credentials of credential '{name}' (HTTP 401" in err, err
        assert bad not in out + err


def test_token_realm_outage_is_transient_not_refused_credentials(token_registry: RegistryServer,
                                                                 token_issuer: TokenIssuer, tmp_path: Path) -> None:
    """A realm that answers 5xx or cannot be reached must be retried, and never blamed on the credentials."""
    digest = _push(token_registry, "v1", [_write(tmp_path / "w.bin", b"weights")])
    pinned = Reference.parse(token_registry.ref(REPO, digest))
    token_issuer.outage = 503
    before = len(token_issuer.requests)
    client = RegistryClient(None, _user(token_registry), deadline_seconds=10, max_attempts=2)
    with pytest.raises(Transient) as info:
        client.get_manifest(pinned)
    assert not isinstance(info.value, AuthError)
    assert f"token realm 127.0.0.1:{token_issuer.port} answered HTTP 503 (after 2 attempts)" in str(info.value)
    assert [r.status for r in token_issuer.requests[before:]] == [503, 503]
    token_issuer.outage = None
    assert client.get_manifest(pinned).digest == digest  # the same client recovers once the realm is back

    dead = dataclasses.replace(token_issuer.settings, realm=f"http://127.0.0.1:{free_port()}/token")
    with run_registry(tmp_path / "registry-dead-realm", token_auth=dead) as server:
        client = RegistryClient(None, _user(server), deadline_seconds=10, max_attempts=2)
        with pytest.raises(Transient, match=r"cannot reach token realm 127\.0\.0\.1:\d+ \(ConnectionError\)"):
            client.get_manifest(Reference.parse(server.ref(REPO, "v1")))


def test_a_password_never_follows_a_plain_http_realm_off_this_host(token_issuer: TokenIssuer,
                                                                  tmp_path: Path) -> None:
    # The registry (on loopback, so plain HTTP) names a realm elsewhere over plain HTTP: the client must
    # refuse before any byte goes to it, and say what to change.
    settings = dataclasses.replace(token_issuer.settings, realm="http://realm.example.invalid/token")
    with run_registry(tmp_path / "registry", token_auth=settings) as server:
        client = RegistryClient(None, _user(server), deadline_seconds=10)
        with pytest.raises(AuthError) as caught:
            client.get_manifest(Reference.parse(server.ref(REPO, "v1")))
    message = str(caught.value)
    assert "refusing to send the credentials of 'fleet' over plain HTTP to token realm realm.example.invalid" \
        in message
    assert server.password and server.password not in message
    assert not token_issuer.requests
