"""A real OCI registry on loopback: Debian's ``docker-registry`` (CNCF distribution 2.8).

``run_registry`` is free of pytest so that ``bench/`` and the demo script can use it too; the fixtures
``registry`` (plain HTTP, anonymous), ``secure_registry`` (htpasswd basic auth + TLS with a CA made
here) and ``token_registry`` (bearer tokens from the ``token_issuer`` of tokenauth.py) wrap it.  The
access log (one line per request, with the bytes written) is kept in the work dir so tests can count what
the registry served.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.services.tokenauth import TokenAuthSettings, TokenIssuer, run_token_issuer

REGISTRY_BIN = "docker-registry"
USERNAME = "fleet-operator"
# Test-only secret, deliberately distinctive so that leak checks can grep for it.
PASSWORD = "s3cr3t-Pa55w0rd-xyz"

_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) (?P<size>\d+|-)')


@dataclass(frozen=True)
class AccessEntry:
    method: str
    path: str
    status: int
    size: int


@dataclass(frozen=True)
class RegistryServer:
    address: str
    root: Path
    username: str | None
    password: str | None = field(repr=False)
    ca_file: Path | None
    tls: bool
    access_log: Path | None = None

    def ref(self, repo: str, tag_or_digest: str) -> str:
        sep = "@" if tag_or_digest.startswith("sha256:") else ":"
        return f"{self.address}/{repo}{sep}{tag_or_digest}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def access_entries(self) -> list[AccessEntry]:
        """Every request the registry answered so far (method, path, status, bytes written)."""
        if self.access_log is None or not self.access_log.exists():
            return []
        entries = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            m = _ACCESS_LINE.search(line)
            if m:
                size = 0 if m["size"] == "-" else int(m["size"])
                entries.append(AccessEntry(m["method"], m["path"], int(m["status"]), size))
        return entries

    def blob_bytes_served(self, digest: str | None = None) -> int:
        """Bytes of blob bodies sent by GET (optionally only for one digest)."""
        return sum(
            e.size
            for e in self.access_entries()
            if e.method == "GET" and "/blobs/" in e.path and (digest is None or e.path.endswith(digest))
        )

    def blob_path(self, digest: str) -> Path:
        """Where the registry stores a blob's bytes (tests corrupt them there)."""
        hexdigest = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _make_tls(workdir: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it (openssl CLI)."""
    ca_key, ca_crt = workdir / "ca.key", workdir / "ca.crt"
    key, csr, crt = workdir / "server.key", workdir / "server.csr", workdir / "server.crt"
    ext = workdir / "san.ext"

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_crt),
            "-days", "2", "-subj", "/CN=reconciler test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return ca_crt, crt, key


def _htpasswd(path: Path, username: str, password: str) -> None:
    import bcrypt  # dev dependency: distribution's htpasswd accepts only bcrypt hashes

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    path.write_text(f"{username}:{hashed}\n")


@contextmanager
def run_registry(workdir: Path, *, auth: bool = False, tls: bool = False,
                 token_auth: TokenAuthSettings | None = None, proxy: str | None = None) -> Iterator[RegistryServer]:
    """Start ``docker-registry serve`` on 127.0.0.1 with a random port; stop it on exit.

    ``proxy`` (a registry URL) makes it a pull-through cache of that registry (``proxy.remoteurl``).

    ``token_auth`` makes the registry demand bearer tokens from that realm (its issuer must accept
    USERNAME/PASSWORD, which the server then advertises as its credentials)."""
    binary = shutil.which(REGISTRY_BIN)
    if binary is None:
        raise RuntimeError("docker-registry is not installed (run scripts/install-system-deps.sh)")
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "storage"
    root.mkdir(exist_ok=True)
    port = free_port()
    lines = [
        "version: 0.1",
        "log:",
        "  level: info",
        "  accesslog:",
        "    disabled: false",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {root}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
        "  secret: reconciler-test-http-secret",
    ]
    ca_file: Path | None = None
    if tls:
        ca_file, crt, key = _make_tls(workdir)
        lines += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
    if auth:
        htpasswd = workdir / "htpasswd"
        _htpasswd(htpasswd, USERNAME, PASSWORD)
        lines += ["auth:", "  htpasswd:", "    realm: reconciler-test", f"    path: {htpasswd}"]
    elif token_auth is not None:
        lines += ["auth:", "  token:", f"    realm: {token_auth.realm}", f"    service: {token_auth.service}",
                  f"    issuer: {token_auth.issuer}", f"    rootcertbundle: {token_auth.rootcertbundle}"]
    if proxy is not None:
        lines += ["proxy:", f"  remoteurl: {proxy}"]
    config = workdir / "registry.yml"
    config.write_text("\n".join(lines) + "\n")
    access_log = workdir / "access.log"
    server_log = workdir / "registry.log"
    with open(access_log, "wb") as out, open(server_log, "wb") as err:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env={**os.environ, "OTEL_SDK_DISABLED": "true"})
    server = RegistryServer(
        address=f"127.0.0.1:{port}",
        root=root,
        username=USERNAME if auth or token_auth else None,
        password=PASSWORD if auth or token_auth else None,
        ca_file=ca_file,
        tls=tls,
        access_log=access_log,
    )
    try:
        _wait_ready(server, proc, server_log)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: RegistryServer, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    verify: bool | str = str(server.ca_file) if server.ca_file else True
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            # 200 anonymous, 401 with auth: either way it is serving.
            r = requests.get(f"{server.url}/v2/", timeout=1, verify=verify)
            if r.status_code in (200, 401):
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer on {server.address}: {log.read_text()[-2000:]}")


try:
    import pytest
except ImportError:  # pragma: no cover - run_registry is usable without pytest
    pass
else:

    @pytest.fixture
    def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
        with run_registry(tmp_path_factory.mktemp("registry")) as server:
            yield server

    @pytest.fixture
    def secure_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
        with run_registry(tmp_path_factory.mktemp("secure-registry"), auth=True, tls=True) as server:
            yield server

    @pytest.fixture
    def token_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenIssuer]:
        with run_token_issuer(tmp_path_factory.mktemp("token-issuer"), {USERNAME: PASSWORD}) as issuer:
            yield issuer

    @pytest.fixture
    def token_registry(tmp_path_factory: pytest.TempPathFactory,
                       token_issuer: TokenIssuer) -> Iterator[RegistryServer]:
        with run_registry(tmp_path_factory.mktemp("token-registry"), token_auth=token_issuer.settings) as server:
            yield server
