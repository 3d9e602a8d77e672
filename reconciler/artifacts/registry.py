"""The registry adapter: oras-py's Registry and auth session, with our deadline, backoff and errors.

oras-py's ``do_request`` retries with sleeps of ``2 + 3**n`` seconds and raises bare ValueErrors; we
replace it (a subclass without the retry decorator) so that every request has a timeout taken from the
current operation's deadline, and we retry transient failures ourselves with a short bounded backoff.
Blob bytes are streamed by our own code through the same session, verified and resumable.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import oras.auth.utils
import oras.container
import oras.provider
import requests
from requests.adapters import HTTPAdapter

from reconciler.artifacts.manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    parse_manifest,
)
from reconciler.artifacts.reference import Reference
from reconciler.credentials import Credential, mask
from reconciler.durable import start_writeback
from reconciler.errors import (
    AuthError,
    DeadlineExceeded,
    IntegrityError,
    NotFound,
    ReconcilerError,
    Stalled,
    Transient,
)
from reconciler.model import RegistryConfig

T = TypeVar("T")

CHUNK = 1024 * 1024
WRITEBACK_BYTES = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TimeoutAdapter(HTTPAdapter):
    """Gives a timeout to requests that oras-py sends without one (its token requests)."""

    def __init__(self, timeout: Callable[[], tuple[float, float]]) -> None:
        super().__init__(pool_connections=4, pool_maxsize=16)
        self._timeout = timeout

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> requests.Response:
        return super().send(request, stream=stream, timeout=timeout or self._timeout(), **kwargs)


class _Oras(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's Registry with one request per call (no hidden retries) and basic or bearer auth."""

    def __init__(self, hostname: str, scheme: str, verify: bool | str, credential: Credential | None,
                 timeout: Callable[[], tuple[float, float]],
                 hard_fail: Callable[[requests.Response], None], plain_http: bool = False) -> None:
        super().__init__(hostname=hostname, insecure=scheme == "http", tls_verify=verify,
                         auth_backend="token")
        self._credential = credential
        self._timeout = timeout
        self._plain_http = plain_http  # the registry entry says plainHTTP: true
        # Raises our error for refused credentials and server errors, which oras-py would otherwise
        # turn into bare ValueErrors deep inside push.
        self._hard_fail = hard_fail
        self._authorization: str | None = None
        adapter = _TimeoutAdapter(timeout)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def do_request(self, url: str, method: str = "GET", data: Any = None,
                   headers: dict[str, str] | None = None, json: Any = None,
                   stream: bool = False) -> requests.Response:
        headers = dict(headers or {})
        if self._authorization and "Authorization" not in headers:
            headers["Authorization"] = self._authorization
        response = self._send(method, url, data, json, headers, stream)
        if response.status_code == 401:
            try:
                answer = self._answer(response.headers.get("Www-Authenticate", ""))
            except BaseException:
                response.close()
                raise
            if answer is not None:
                response.close()
                self._authorization = headers["Authorization"] = answer
                if hasattr(data, "seek"):
                    data.seek(0)
                response = self._send(method, url, data, json, headers, stream)
        self._hard_fail(response)
        return response

    def _send(self, method: str, url: str, data: Any, json: Any, headers: dict[str, str],
              stream: bool) -> requests.Response:
        response: requests.Response = self.session.request(
            method, url, data=data, json=json, headers=headers, stream=stream,
            verify=self._tls_verify, timeout=self._timeout(), allow_redirects=True,
        )
        return response

    def _answer(self, challenge: str) -> str | None:
        """The Authorization header answering a 401 challenge, or None when we have nothing to offer."""
        cred = self._credential
        scheme = challenge.split(" ", 1)[0].lower()
        secret = (cred.password or cred.token) if cred else None
        if scheme == "basic":
            if cred is None or not cred.username or not secret:
                return None
            return "Basic " + base64.b64encode(f"{cred.username}:{secret}".encode()).decode()
        if scheme != "bearer":
            return None
        if cred is not None and cred.token and not cred.username:
            return f"Bearer {cred.token}"
        basic = oras.auth.utils.get_basic_auth(cred.username, secret) if cred and cred.username and secret else None
        token = self._token(oras.auth.utils.parse_auth_header(challenge), basic)
        return f"Bearer {token}" if token else None

    def _token(self, challenge: Any, basic: str | None) -> str | None:
        """A token from the challenge's realm, or None when the realm refuses us.

        Our own request rather than oras-py's ``request_token``, which answers None for every failure:
        a realm that is down or answers 5xx must be retried, not reported as refused credentials."""
        if not challenge.realm:
            return None
        parts = urlsplit(challenge.realm)
        realm = parts.netloc or challenge.realm
        if basic and parts.scheme != "https" and not (is_loopback(parts.hostname or "") or self._plain_http):
            # The realm comes from the registry's answer; a password must not follow it over plain HTTP.
            name = self._credential.name if self._credential else "?"
            raise AuthError(f"refusing to send the credentials of {name!r} over plain HTTP to token realm {realm} "
                            "(use an https realm, or plainHTTP: true on the registry entry)")
        params = {k: v for k, v in (("service", challenge.service), ("scope", challenge.scope)) if v}
        headers = {"Accept": "application/json"}
        if basic:
            headers["Authorization"] = f"Basic {basic}"
        try:
            response = self.session.get(challenge.realm, params=params, headers=headers,
                                        verify=self._tls_verify, timeout=self._timeout())
        except requests.exceptions.SSLError:
            raise Stalled(f"TLS verification failed for token realm {realm} "
                          "(give the registry a caFile that also vouches for its token realm)") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise Transient(f"cannot reach token realm {realm} ({type(exc).__name__})") from None
        with response:
            code = response.status_code
            if code in (401, 403):
                return None  # the registry's 401 that follows names whose credentials were refused
            if code == 429 or code >= 500:
                raise Transient(f"token realm {realm} answered HTTP {code}")
            try:
                body = response.json() if code == 200 else None
            except ValueError:
                body = None
            token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise Stalled(f"token realm {realm} answered HTTP {code} without a token")
            return token


class RegistryClient:
    """Talks to OCI registries for one registry configuration and credential.

    ``registry=None`` derives the transport from the reference's host: loopback (127.0.0.0/8, ::1,
    localhost) is spoken to over plain HTTP as Docker does, any other host over HTTPS.  With a
    configuration, ``plainHTTP`` forces HTTP; a ``caFile`` or ``skipTLSVerify`` implies HTTPS even on
    loopback.  Each public call has ``deadline_seconds`` in total, retries transient failures at most
    ``max_attempts`` times with exponential backoff, and raises only ReconcilerError subclasses.
    """

    def __init__(self, registry: RegistryConfig | None, credential: Credential | None, *,
                 deadline_seconds: float = 300.0, max_attempts: int = 4) -> None:
        self.config = registry
        self.credential = credential
        self.deadline_seconds = deadline_seconds
        self.max_attempts = max(1, max_attempts)
        self._clients: dict[str, _Oras] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- transport --------------------------------------------------------------------------------

    def transport(self, ref: Reference) -> tuple[str, bool | str]:
        """(scheme, requests ``verify``) for a reference's registry."""
        cfg = self.config
        if cfg is not None and cfg.plain_http:
            return "http", True
        verify: bool | str = True
        if cfg is not None and cfg.skip_tls_verify:
            verify = False
        elif cfg is not None and cfg.ca_file:
            verify = cfg.ca_file
        wants_tls = cfg is not None and (cfg.skip_tls_verify or bool(cfg.ca_file))
        if is_loopback(ref.host) and not wants_tls:
            return "http", True
        return "https", verify

    def _client(self, ref: Reference) -> _Oras:
        with self._lock:
            client = self._clients.get(ref.registry)
            if client is None:
                scheme, verify = self.transport(ref)
                client = _Oras(ref.registry, scheme, verify, self.credential, self._timeout, self._hard_fail,
                               plain_http=self.config is not None and self.config.plain_http)
                self._clients[ref.registry] = client
            return client

    def _url(self, ref: Reference, kind: str, target: str) -> str:
        scheme, _ = self.transport(ref)
        return f"{scheme}://{ref.registry}/v2/{ref.repository}/{kind}/{target}"

    # -- deadline and retries ---------------------------------------------------------------------

    def _timeout(self) -> tuple[float, float]:
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return CONNECT_TIMEOUT, READ_TIMEOUT
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"deadline of {self.deadline_seconds:g}s passed")
        return min(CONNECT_TIMEOUT, remaining), min(READ_TIMEOUT, remaining)

    def _hard_fail(self, response: requests.Response) -> None:
        code = response.status_code
        if code in (401, 403, 429) or code >= 500:
            response.close()
            self._check(response, getattr(self._local, "what", "registry request"), self._local.ref)

    def _retrying(self, what: str, ref: Reference, attempt_once: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.deadline_seconds
        outer: float | None = getattr(self._local, "deadline", None)
        self._local.deadline = deadline if outer is None else min(outer, deadline)
        self._local.what, self._local.ref = what, ref
        try:
            attempt = 0
            while True:
                attempt += 1
                try:
                    try:
                        return attempt_once()
                    except requests.RequestException as exc:
                        raise self._translate(exc, what, ref) from None
                except Transient as exc:
                    remaining = self._local.deadline - time.monotonic()
                    if remaining <= 0 or isinstance(exc, DeadlineExceeded):
                        raise DeadlineExceeded(
                            f"{what}: gave up after {attempt} attempt(s) within the "
                            f"{self.deadline_seconds:g}s deadline: {_unprefixed(self._clean(str(exc)), what)}"
                        ) from None
                    if attempt >= self.max_attempts:
                        message = f"{what}: {_unprefixed(self._clean(str(exc)), what)} (after {attempt} attempts)"
                        raise Transient(message) from None
                    time.sleep(min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_MAX, remaining))
        finally:
            self._local.deadline = outer

    def _clean(self, text: str) -> str:
        return mask(text, self.credential.secrets()) if self.credential else text

    def _translate(self, exc: requests.RequestException, what: str, ref: Reference) -> ReconcilerError:
        if isinstance(exc, requests.exceptions.SSLError):
            return Stalled(
                f"{what}: TLS verification failed for registry {ref.registry} "
                "(give the registry a caFile, or skipTLSVerify for a test registry)"
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return Transient(f"{what}: registry {ref.registry} timed out")
        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError):
            return Transient(f"{what}: cannot reach registry {ref.registry} ({type(exc).__name__})")
        return Transient(f"{what}: request to registry {ref.registry} failed ({type(exc).__name__})")

    def _check(self, response: requests.Response, what: str, ref: Reference) -> None:
        code = response.status_code
        if code < 300:
            return
        detail = _error_codes(response)
        if code in (401, 403):
            who = f"the credentials of {self.credential}" if self.credential else "anonymous access"
            raise AuthError(f"{what}: registry {ref.registry} refused {who} (HTTP {code}{detail})")
        if code == 404:
            raise NotFound(f"{what}: not found in registry {ref.registry} (HTTP 404{detail})")
        if code == 429 or code >= 500:
            raise Transient(f"{what}: registry {ref.registry} answered HTTP {code}{detail}")
        raise Stalled(f"{what}: registry {ref.registry} answered HTTP {code}{detail}")

    # -- operations -------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch and parse the manifest; a pinned reference must match its digest byte for byte."""
        what = f"manifest {ref}"

        def once() -> Manifest:
            accept = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
            response = self._client(ref).do_request(
                self._url(ref, "manifests", ref.target), "GET", headers={"Accept": accept}, stream=True
            )
            with response:
                self._check(response, what, ref)
                raw = b""
                for chunk in response.iter_content(64 * 1024):
                    raw += chunk
                    if len(raw) > MAX_MANIFEST_BYTES:
                        raise IntegrityError(f"{what}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
            if ref.digest and digest != ref.digest:
                raise IntegrityError(f"{what}: manifest digest mismatch: expected {ref.digest}, got {digest}")
            return parse_manifest(raw, digest, what)

        return self._retrying(what, ref, once)

    def download_blob(self, ref: Reference, desc: Descriptor, ingest: Path,
                      progress: Callable[[int], None] | None = None) -> int:
        """Stream blob ``desc`` into ``ingest``, resuming from the bytes already there (HTTP Range).

        Never writes more than ``desc.size`` bytes; fsyncs the file; on a digest mismatch deletes it and
        raises IntegrityError naming the reference and both digests.  Returns bytes fetched over the
        network (all attempts)."""
        what = f"blob {desc.digest} of {ref}"
        fetched = [0]

        def count(n: int) -> None:
            fetched[0] += n
            if progress is not None:
                progress(n)

        self._retrying(what, ref, lambda: self._download_once(ref, desc, ingest, count, what))
        return fetched[0]

    def _download_once(self, ref: Reference, desc: Descriptor, ingest: Path, count: Callable[[int], None],
                       what: str) -> None:
        hasher = hashlib.sha256()
        offset = ingest.stat().st_size if ingest.exists() else 0
        if offset > desc.size:
            ingest.unlink()
            offset = 0
        if offset:
            with open(ingest, "rb") as existing:
                while block := existing.read(CHUNK):
                    hasher.update(block)
        if offset < desc.size:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._client(ref).do_request(
                self._url(ref, "blobs", desc.digest), "GET", headers=headers, stream=True
            )
            with response:
                if response.status_code == 416:
                    ingest.unlink(missing_ok=True)
                    raise Transient(f"{what}: registry refused to resume at byte {offset}; starting over")
                self._check(response, what, ref)
                if offset and (response.status_code != 206 or not _starts_at(response, offset)):
                    # The registry ignored Range: take the full body from the start.
                    hasher, offset = hashlib.sha256(), 0
                with open(ingest, "ab" if offset else "wb") as f, _Sink(f, hasher, offset) as sink:
                    written = offset
                    for chunk in response.iter_content(CHUNK):
                        room = desc.size - written
                        last = len(chunk) >= room
                        if last:
                            # Endless-data guard: stop reading at the descriptor's size.
                            chunk = chunk[:room]
                        sink.put(chunk)
                        written += len(chunk)
                        count(len(chunk))
                        if last:
                            break
                    sink.close()
                    f.flush()
                    os.fsync(f.fileno())
            if written < desc.size:
                raise Transient(f"{what}: download ended at byte {written} of {desc.size}")
        actual = "sha256:" + hasher.hexdigest()
        if actual != desc.digest:
            ingest.unlink(missing_ok=True)
            raise IntegrityError(f"{ref}: blob digest mismatch: expected {desc.digest}, got {actual}")

    def push(self, ref: Reference, files: Sequence[Path], annotations: Mapping[str, str]) -> str:
        """Push ``files`` as one artifact tagged ``ref``; returns the manifest digest."""
        what = f"push to {ref}"
        for path in files:
            if not path.exists():
                raise NotFound(f"{what}: {path} does not exist")

        def once() -> str:
            client = self._client(ref)
            try:
                response = client.push(
                    target=str(ref), files=[str(p) for p in files], disable_path_validation=True,
                    manifest_annotations=dict(annotations), quiet=True,
                )
            except (ValueError, RuntimeError, OSError) as exc:
                if isinstance(exc, requests.RequestException):
                    raise
                raise Stalled(f"{what}: {self._clean(str(exc))}") from None
            self._check(response, what, ref)
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                raise Stalled(f"{what}: registry did not return the manifest digest")
            return str(digest)

        return self._retrying(what, ref, once)


class _Sink:
    """Hashes chunks on one thread and writes them on another while the caller reads the socket.

    hashlib, file writes and socket reads all release the GIL, so the three overlap; each queue is
    bounded, so at most a few chunks are held in memory.  The writer starts the kernel's writeback
    every WRITEBACK_BYTES, so the final fsync of a large blob has little left to do."""

    def __init__(self, file: Any, hasher: Any, offset: int) -> None:
        self._file, self._hasher = file, hasher
        self._written = self._flushed = offset
        self._error: BaseException | None = None
        self._queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=4), queue.Queue(maxsize=4)]
        self._threads = [
            threading.Thread(target=self._drain, args=(self._queues[0], self._hash), name="blob-hash",
                             daemon=True),
            threading.Thread(target=self._drain, args=(self._queues[1], self._write), name="blob-write",
                             daemon=True),
        ]
        self._closed = False

    def __enter__(self) -> _Sink:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hash(self, chunk: bytes) -> None:
        self._hasher.update(chunk)

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._written += len(chunk)
        if self._written - self._flushed >= WRITEBACK_BYTES:
            self._file.flush()
            start_writeback(self._file.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def _drain(self, chunks: queue.Queue[bytes | None], step: Callable[[bytes], None]) -> None:
        while (chunk := chunks.get()) is not None:
            if self._error is None:
                try:
                    step(chunk)
                except BaseException as error:  # re-raised in the reading thread
                    self._error = error

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        for chunks in self._queues:
            chunks.put(chunk)

    def close(self) -> None:
        """Wait until every chunk is hashed and written; re-raise a failure of either."""
        if not self._closed:
            self._closed = True
            for chunks in self._queues:
                chunks.put(None)
            for thread in self._threads:
                thread.join()
        if self._error is not None:
            raise self._error


def _unprefixed(text: str, what: str) -> str:
    """``text`` without a leading ``what: `` (the attempt's own message already names the operation)."""
    return text[len(what) + 2:] if text.startswith(f"{what}: ") else text


def _starts_at(response: requests.Response, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _error_codes(response: requests.Response) -> str:
    """The registry's error codes (e.g. MANIFEST_UNKNOWN), never its free text."""
    try:
        if "json" not in response.headers.get("Content-Type", ""):
            return ""
        doc = response.json()
        codes = [str(e.get("code")) for e in doc.get("errors", []) if isinstance(e, dict) and e.get("code")]
    except (ValueError, AttributeError, requests.RequestException):
        return ""
    return f": {', '.join(codes)}" if codes else ""
