"""A real token issuer for the registry's bearer-token auth, on loopback.

It follows Docker's token authentication spec (https://distribution.github.io/distribution/spec/auth/token/):
``GET /token?service=S&scope=repository:NAME:pull,push`` with Basic credentials answers 401 when they are
wrong, and otherwise ``{"token", "access_token", "expires_in", "issued_at"}`` holding an RS256 JWT that grants
the requested actions.  The JWT carries the issuer's self-signed certificate as ``x5c``; the registry trusts
it through ``rootcertbundle``.  Keys and signatures come from the ``openssl`` CLI, so no Python crypto
library is needed.  Every request is logged (account, service, scopes, status; never the password) so tests
can assert on what the client asked for.

``run_token_issuer`` is free of pytest, like ``run_registry``.
"""

from __future__ import annotations

import base64
import hmac
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SERVICE = "reconciler-test-registry"
ISSUER = "reconciler-test-token-issuer"


@dataclass(frozen=True)
class TokenAuthSettings:
    """The registry's ``auth: token:`` block (distribution 2.8 keys)."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope:
        # resourcetype ":" resourcename ":" action *("," action); a name may hold ':' (e.g. host:port).
        kind, _, rest = text.partition(":")
        name, sep, actions = rest.rpartition(":")
        if not sep:
            name, actions = rest, ""
        return cls(kind, name, tuple(a for a in actions.split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


@dataclass(frozen=True)
class TokenRequest:
    """One request the issuer answered.  ``account`` is the Basic username presented (None: anonymous)."""

    account: str | None
    service: str
    scopes: tuple[str, ...]
    status: int


@dataclass
class TokenIssuer:
    workdir: Path
    accounts: Mapping[str, str] = field(repr=False)
    service: str = SERVICE
    issuer: str = ISSUER
    ttl_seconds: int = 300
    port: int = 0
    # Set to a status (e.g. 503) to play an outage: every request gets it, credentials unchecked.
    outage: int | None = None
    _log: list[TokenRequest] = field(default_factory=list, repr=False)
    _issued: list[str] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def key_file(self) -> Path:
        return self.workdir / "issuer.key"

    @property
    def cert_file(self) -> Path:
        return self.workdir / "issuer.crt"

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def settings(self) -> TokenAuthSettings:
        return TokenAuthSettings(self.realm, self.service, self.issuer, self.cert_file)

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._log)

    @property
    def issued(self) -> list[str]:
        """Every token handed out so far (tests check none of them leaks into output)."""
        with self._lock:
            return list(self._issued)

    def make_key(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key_file),
             "-out", str(self.cert_file), "-days", "2", "-subj", "/CN=reconciler test token issuer"],
            check=True, capture_output=True,
        )

    def _x5c(self) -> str:
        # A PEM body is the base64 of the DER certificate, which is what x5c holds.
        lines = self.cert_file.read_text().strip().splitlines()
        return "".join(line for line in lines if not line.startswith("-----"))

    def issue(self, subject: str, scopes: Sequence[Scope], ttl_seconds: int | None = None) -> str:
        """An RS256 JWT for ``subject`` granting ``scopes``, as the registry expects it."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + (self.ttl_seconds if ttl_seconds is None else ttl_seconds),
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": [{"type": s.type, "name": s.name, "actions": list(s.actions)} for s in scopes],
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        # RS256 is RSASSA-PKCS1-v1_5 over SHA-256, which is what `openssl dgst -sign` produces.
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key_file)],
            input=signing_input.encode(), check=True, capture_output=True,
        ).stdout
        token = f"{signing_input}.{_b64url(signature)}"
        with self._lock:
            self._issued.append(token)
        return token

    def _account(self, authorization: str | None) -> tuple[str | None, bool]:
        """(username presented, whether the credentials are right)."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None, False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None, False
        username, _, password = decoded.partition(":")
        expected = self.accounts.get(username)
        ok = expected is not None and hmac.compare_digest(expected.encode(), password.encode())
        return username, ok

    def answer(self, path: str, authorization: str | None) -> tuple[int, dict[str, object]]:
        url = urlsplit(path)
        query = parse_qs(url.query)
        service = (query.get("service") or [""])[0]
        # Clients send one `scope` parameter per scope; some join several with spaces.
        scopes = tuple(s for value in query.get("scope", []) for s in value.split())
        account, ok = self._account(authorization)
        body: dict[str, object]
        if self.outage is not None:
            status, body = self.outage, {"errors": [{"code": "UNAVAILABLE", "message": "outage"}]}
        elif url.path != "/token":
            status, body = 404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]}
        elif service != self.service:
            status, body = 400, {"errors": [{"code": "INVALID_SERVICE", "message": f"unknown service {service!r}"}]}
        elif not ok:
            status, body = 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        else:
            status = 200
            token = self.issue(account or "", [Scope.parse(s) for s in scopes])
            issued_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            body = {"token": token, "access_token": token, "expires_in": self.ttl_seconds, "issued_at": issued_at}
        with self._lock:
            self._log.append(TokenRequest(account, service, scopes, status))
        return status, body


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handler(issuer: TokenIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body = issuer.answer(self.path, self.headers.get("Authorization"))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if status == 401:
                self.send_header("WWW-Authenticate", f'Basic realm="{issuer.service}"')
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the request log above is what tests read; stderr stays quiet

    return Handler


@contextmanager
def run_token_issuer(workdir: Path, accounts: Mapping[str, str], *, service: str = SERVICE,
                     ttl_seconds: int = 300) -> Iterator[TokenIssuer]:
    """Serve the token endpoint on 127.0.0.1 with a random port; stop it on exit."""
    issuer = TokenIssuer(workdir, dict(accounts), service=service, ttl_seconds=ttl_seconds)
    issuer.make_key()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    server.daemon_threads = True
    issuer.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="token-issuer", daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
