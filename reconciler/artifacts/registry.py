"""The registry adapter: oras-py's Registry and auth session, with our deadline, backoff and errors.

oras-py's ``do_request`` retries with sleeps of ``2 + 3**n`` seconds and raises bare ValueErrors; we
replace it (a subclass without the retry decorator) so that every request has a timeout taken from the
current operation's deadline, and we retry transient failures ourselves with a short bounded backoff.
Blob bytes are streamed by our own code through the same session, verified and resumable.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import requests

from reconciler.artifacts import packing
from reconciler.artifacts.failures import check_response, translate, unprefixed
from reconciler.artifacts.manifest import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_MANIFEST_BYTES,
    Descriptor,
    Manifest,
    parse_manifest,
)
from reconciler.artifacts.mirrors import Mirrors, drop
from reconciler.artifacts.reference import Reference
from reconciler.artifacts.session import OrasSession, is_loopback
from reconciler.artifacts.sink import BlobSink
from reconciler.credentials import Credential, mask
from reconciler.durable import disk_full_as_waiting
from reconciler.errors import DeadlineExceeded, IntegrityError, NotFound, Stalled, Transient
from reconciler.model import RegistryConfig

__all__ = ["RegistryClient", "is_loopback"]

T = TypeVar("T")

CHUNK = 1024 * 1024
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
MIN_RATE = 1024.0  # bytes per second, averaged from the start of one response
SLOW_GRACE = 30.0


class RegistryClient:
    """Talks to OCI registries for one registry configuration and credential.

    ``registry=None`` derives the transport from the reference's host: loopback (127.0.0.0/8, ::1,
    localhost) is spoken to over plain HTTP as Docker does, any other host over HTTPS.  With a
    configuration, ``plainHTTP`` forces HTTP; a ``caFile`` or ``skipTLSVerify`` implies HTTPS even on
    loopback.  Each public call has ``deadline_seconds`` in total, retries transient failures at most
    ``max_attempts`` times with exponential backoff, and raises only ReconcilerError subclasses.
    """

    def __init__(self, registry: RegistryConfig | None, credential: Credential | None, *,
                 deadline_seconds: float = 300.0, max_attempts: int = 4,
                 min_bytes_per_second: float = MIN_RATE, slow_grace_seconds: float = SLOW_GRACE) -> None:
        self.config = registry
        self.credential = credential
        self.deadline_seconds = deadline_seconds
        # a blob that trickles in slower than this, once the grace period is over, is cut and resumed
        self.min_bytes_per_second = min_bytes_per_second
        self.slow_grace_seconds = slow_grace_seconds
        self.max_attempts = max(1, max_attempts)
        self._clients: dict[str, OrasSession] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.mirrors: Mirrors[RegistryClient] = Mirrors(registry, lambda config: RegistryClient(config, None, deadline_seconds=deadline_seconds,
                                                                       max_attempts=1))

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

    def _client(self, ref: Reference) -> OrasSession:
        with self._lock:
            client = self._clients.get(ref.registry)
            if client is None:
                scheme, verify = self.transport(ref)
                client = OrasSession(ref.registry, scheme, verify, self.credential, self._timeout,
                                     self._hard_fail, plain_http=self.config is not None and self.config.plain_http)
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
            what = getattr(self._local, "what", "registry request")
            check_response(response, what, self._local.ref, self.credential)

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
                        raise translate(exc, what, ref) from None
                except Transient as exc:
                    remaining = self._local.deadline - time.monotonic()
                    if remaining <= 0 or isinstance(exc, DeadlineExceeded):
                        raise DeadlineExceeded(
                            f"{what}: gave up after {attempt} attempt(s) within the "
                            f"{self.deadline_seconds:g}s deadline: {unprefixed(self._clean(str(exc)), what)}"
                        ) from None
                    if attempt >= self.max_attempts:
                        message = f"{what}: {unprefixed(self._clean(str(exc)), what)} (after {attempt} attempts)"
                        raise Transient(message) from None
                    time.sleep(min(BACKOFF_BASE * 2 ** (attempt - 1), BACKOFF_MAX, remaining))
        finally:
            self._local.deadline = outer

    def _clean(self, text: str) -> str:
        return mask(text, self.credential.secrets()) if self.credential else text

    # -- operations -------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch and parse the manifest (a pinned one through the mirrors first); a pinned reference must match
        its digest byte for byte."""
        served, manifest = self.mirrors.first(ref, ref.digest, lambda client, at: client.get_manifest(at))
        if served and manifest is not None:
            return manifest
        what = f"manifest {ref}"

        def once() -> Manifest:
            accept = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
            response = self._client(ref).do_request(
                self._url(ref, "manifests", ref.target), "GET", headers={"Accept": accept}, stream=True
            )
            with response:
                check_response(response, what, ref, self.credential)
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

        served, _ = self.mirrors.first(ref, desc.digest, lambda client, at: client.download_blob(at, desc, ingest, count),
                                       cleanup=drop(ingest))
        if served:
            return fetched[0]

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
                check_response(response, what, ref, self.credential)
                if offset and (response.status_code != 206 or not _starts_at(response, offset)):
                    # The registry ignored Range: take the full body from the start.
                    hasher, offset = hashlib.sha256(), 0
                with disk_full_as_waiting(ingest), open(ingest, "ab" if offset else "wb") as f, \
                        BlobSink(f, hasher, offset) as sink:
                    written = offset
                    for chunk in self._stream(response, what):
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

    def _stream(self, response: requests.Response, what: str) -> Iterator[bytes]:
        """The body as it arrives, with the deadline and the minimum rate checked after every read.

        ``iter_content`` fills a whole chunk before it returns (a buffered read loops until it has it), so a
        registry sending a byte a second kept one read going for days; ``read1`` returns what one socket
        read gave, and each socket read times out at the deadline."""
        started = time.monotonic()
        received = 0
        while True:
            now = time.monotonic()
            if now >= self._local.deadline:
                raise DeadlineExceeded(f"{what}: deadline of {self.deadline_seconds:g}s passed after {received} bytes")
            elapsed = now - started
            if self.min_bytes_per_second and elapsed > self.slow_grace_seconds and \
                    received < self.min_bytes_per_second * elapsed:
                raise Transient(f"{what}: registry sends {received / elapsed:.0f} B/s, under the minimum of "
                                f"{self.min_bytes_per_second:.0f} B/s")
            chunk = response.raw.read1(CHUNK, decode_content=True)
            if not chunk:
                return
            received += len(chunk)
            yield chunk

    def push(self, ref: Reference, files: Sequence[Path], annotations: Mapping[str, str]) -> str:
        """Push ``files`` as one artifact tagged ``ref``; returns the manifest digest."""
        what = f"push to {ref}"
        for path in files:
            if not path.exists():
                raise NotFound(f"{what}: {path} does not exist")

        def once() -> str:
            client = self._client(ref)
            try:
                with tempfile.TemporaryDirectory(prefix="reconciler-publish-") as work:
                    packed, annotation_file = packing.prepare(files, Path(work))
                    response = client.push(
                        target=str(ref), files=packed, disable_path_validation=True,
                        annotation_file=str(annotation_file), manifest_annotations=dict(annotations), quiet=True,
                    )
            except (ValueError, RuntimeError, OSError) as exc:
                if isinstance(exc, requests.RequestException):
                    raise
                raise Stalled(f"{what}: {self._clean(str(exc))}") from None
            check_response(response, what, ref, self.credential)
            digest = response.headers.get("Docker-Content-Digest")
            if not digest:
                raise Stalled(f"{what}: registry did not return the manifest digest")
            return str(digest)

        return self._retrying(what, ref, once)


def _starts_at(response: requests.Response, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")
