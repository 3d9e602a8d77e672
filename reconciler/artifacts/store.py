"""The content-addressed artifact store under the agent's data dir.

    blobs/sha256/<hex>                 verified blobs (and manifests), read-only, each fetched once
    ingest/<hex>                       partial downloads, resumed with HTTP Range
    models/<name>/.v-<version>-<id>/   one activated version: layer files + .reconciler-manifest.json
    models/<name>/<version>            symlink to it, switched atomically (temp link + rename)

Nothing is activated before every byte is verified; a crash leaves the old version or the new one.
Plain layer files are hard links to their blobs (disks are small), so tampering with either shows up
in ``verify`` as both.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from reconciler.artifacts.activation import activate
from reconciler.artifacts.gc import GcResult, collect
from reconciler.artifacts.layout import META, StoreLayout
from reconciler.artifacts.manifest import Descriptor, Manifest, parse_manifest, safe_relative_path
from reconciler.artifacts.reference import Reference
from reconciler.artifacts.sink import BlobSink
from reconciler.artifacts.source import BlobSource
from reconciler.artifacts.verify import find_damage
from reconciler.durable import fsync_dir
from reconciler.errors import IntegrityError, InvalidConfig, LockHeld, ReconcilerError, Stalled, Waiting

__all__ = ["META", "ArtifactStore", "GcResult", "PullResult", "human", "read_manifest"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


@dataclass(frozen=True)
class PullResult:
    path: Path
    manifest_digest: str
    bytes_downloaded: int
    seconds: float
    cached: bool


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value) or value in (".", ".."):
        raise InvalidConfig(f"{what} {value!r} is not a valid name (letters, digits, '.', '_', '+', '-')")
    return value


class ArtifactStore(StoreLayout):
    """Verified, resumable, deduplicated artifact pulls into ``data_dir``."""

    concurrency = 4  # layers fetched at once
    max_extract_bytes = 16 * 1024**3  # cap on what one version's archives may expand to
    max_extract_ratio = 200.0  # and each archive at most this many times its compressed size
    reserve_bytes = 64 * 1024**2  # free space kept beyond what a pull needs

    def _ensure_dirs(self) -> None:
        for d in (self.blobs, self.ingest, self.models):
            d.mkdir(parents=True, exist_ok=True)

    lock_timeout = 30.0  # seconds to wait for another writer (an operator's verify --repair) before LockHeld

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time per store (the kernel drops the lock if the process dies).  Waits at most
        ``lock_timeout`` for another writer, then raises LockHeld: the agent's pass retries later instead of
        stalling behind an operator's ``store verify --repair``."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".store.lock"
        with open(path, "a") as f:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockHeld(f"{path}: the store is locked by another process (a pull, gc or "
                                       f"store verify --repair) for more than {self.lock_timeout:g}s",
                                       retry_after=30.0) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- pull ---------------------------------------------------------------------------------------

    def pull(self, ref: str, client: BlobSource, *, model: str, version: str,
             progress: Callable[[int, int], None] | None = None) -> PullResult:
        """Pull ``ref`` and activate it as ``models/<model>/<version>``; idempotent."""
        return self._pull(ref, client, model=model, version=version, progress=progress, force=False)

    def _pull(self, ref: str, client: BlobSource, *, model: str, version: str,
              progress: Callable[[int, int], None] | None, force: bool) -> PullResult:
        started = time.monotonic()
        reference = Reference.parse(ref)
        _check_name(model, "model")
        _check_name(version, "version")
        link = self.models / model / version
        meta = self.read_meta(model, version)
        # Pinned and already active: no network at all.
        if not force and meta and reference.digest and meta.get("manifestDigest") == reference.digest:
            return PullResult(link, reference.digest, 0, time.monotonic() - started, True)
        with self._locked():
            self._ensure_dirs()
            manifest = client.get_manifest(reference)
            meta = self.read_meta(model, version)
            if not force and meta and meta.get("manifestDigest") == manifest.digest:
                return PullResult(link, manifest.digest, 0, time.monotonic() - started, True)
            where = str(reference)
            self._check_layers(manifest, where)
            missing = list({d.digest: d for d in manifest.layers if not self.has_blob(d.digest)}.values())
            self._check_disk(manifest, missing, where)
            downloaded = self._fetch(reference, client, manifest, missing, progress)
            self._store_manifest(manifest)
            path = activate(self, model, version, reference.pinned(manifest.digest), manifest,
                            max_bytes=self.max_extract_bytes, max_ratio=self.max_extract_ratio)
            return PullResult(path, manifest.digest, downloaded, time.monotonic() - started, False)

    def _check_layers(self, manifest: Manifest, where: str) -> None:
        titles: set[str] = set()
        for layer in manifest.layers:
            if layer.is_archive and not layer.title:
                continue
            if not layer.title:
                raise IntegrityError(f"{where}: layer {layer.digest} has no org.opencontainers.image.title")
            title = safe_relative_path(layer.title, f"{where}: layer title")
            if title == META or title in titles:
                raise IntegrityError(f"{where}: layer title {title!r} is reserved or used twice")
            titles.add(title)

    def _check_disk(self, manifest: Manifest, missing: list[Descriptor], where: str) -> None:
        needed = 0
        for d in missing:
            ingest = self.ingest / d.digest.split(":", 1)[1]
            needed += d.size - (ingest.stat().st_size if ingest.exists() else 0)
        # Extracted archives take room of their own on top of their blob.
        needed += sum(d.size for d in manifest.layers if d.is_archive)
        free = shutil.disk_usage(self.root).free
        if needed + self.reserve_bytes > free:
            raise Waiting(
                f"not enough disk space to pull {where}: it needs {human(needed)} plus a reserve of "
                f"{human(self.reserve_bytes)}, but {self.root} has {human(free)} free",
                retry_after=300.0,
            )

    def _fetch(self, reference: Reference, client: BlobSource, manifest: Manifest,
               missing: list[Descriptor], progress: Callable[[int, int], None] | None) -> int:
        total = manifest.total_size
        done = [total - sum(d.size for d in missing)]
        lock = threading.Lock()
        downloaded = [0]

        def count(n: int) -> None:
            with lock:
                done[0] += n
                downloaded[0] += n
                if progress is not None:
                    progress(done[0], total)

        def one(desc: Descriptor) -> None:
            ingest = self.ingest / desc.digest.split(":", 1)[1]
            ingest.touch(exist_ok=True)
            client.download_blob(reference, desc, ingest, count)
            blob = self.blob_path(desc.digest)
            os.chmod(ingest, 0o444)
            os.replace(ingest, blob)

        if progress is not None:
            progress(done[0], total)
        if missing:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(missing))) as pool:
                futures = [pool.submit(one, d) for d in missing]
                errors = [f.exception() for f in futures]
            # One directory fsync for all the renames: a blob whose entry a power cut loses is fetched
            # again, and nothing is activated before this returns.
            fsync_dir(self.blobs)
            for exc in errors:
                if exc is not None:
                    raise exc
        return downloaded[0]

    def _store_manifest(self, manifest: Manifest) -> None:
        blob = self.blob_path(manifest.digest)
        if blob.exists():
            return
        tmp = self.ingest / f"{blob.name}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(manifest.raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, blob)
        fsync_dir(self.blobs)

    def import_blob(self, digest: str, size: int, stream: IO[bytes]) -> bool:
        """Take one blob from a local medium (an air-gap bundle), verified as a download is: streamed into
        ingest/, hashed and fsynced.  It waits there until ``admit``; False when the store has it already
        (``stream`` is left unread)."""
        blob = self.blob_path(digest)
        if blob.is_file():
            return False
        with self._locked():
            self._ensure_dirs()
            free = shutil.disk_usage(self.root).free
            if size + self.reserve_bytes > free:
                raise Waiting(f"not enough disk space to take blob {digest} ({human(size)}) from the medium: "
                              f"{self.root} has {human(free)} free", retry_after=300.0)
            ingest = self.ingest / f"{blob.name}.import"
            hasher = hashlib.sha256()
            written = 0
            try:
                with open(ingest, "wb") as f, BlobSink(f, hasher, 0) as sink:
                    while written < size and (chunk := stream.read(min(1024 * 1024, size - written))):
                        sink.put(chunk)
                        written += len(chunk)
                    sink.close()
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:  # the medium ended or failed mid-blob
                ingest.unlink(missing_ok=True)
                raise
            actual = "sha256:" + hasher.hexdigest()
            if written != size or actual != digest:
                ingest.unlink(missing_ok=True)
                got = f"{written} of {size} bytes" if written != size else actual
                raise IntegrityError(f"blob {digest}: the bytes do not match their digest (got {got})")
            os.replace(ingest, ingest.with_suffix(".verified"))
            return True

    def admit(self, digests: Iterable[str]) -> None:
        """Move blobs ``import_blob`` verified into blobs/ (the whole medium checked out)."""
        with self._locked():
            for digest in digests:
                blob = self.blob_path(digest)
                verified = self.ingest / f"{blob.name}.verified"
                if verified.exists():
                    os.chmod(verified, 0o444)
                    os.replace(verified, blob)
            fsync_dir(self.blobs)

    def discard(self) -> None:
        """Forget every blob ``import_blob`` took that was not admitted (the medium did not check out)."""
        if self.ingest.is_dir():
            for taken in [*self.ingest.glob("*.verified"), *self.ingest.glob("*.import")]:
                taken.unlink(missing_ok=True)

    # -- verify -------------------------------------------------------------------------------------

    def verify(self, client_for: Callable[[str], BlobSource] | None = None,
               repair: bool = False) -> list[str]:
        """Check every blob and activated file against its digest; returns one line per failure.

        With ``repair``, corrupt blobs are deleted and each damaged version is pulled again from the
        registry (``client_for(reference)`` gives the client); a repair that fails raises."""
        damage = find_damage(self)
        if repair and damage.failures:
            if client_for is None:
                raise Stalled("cannot repair the store without registry access")
            with self._locked():
                for blob in damage.blobs:
                    blob.unlink(missing_ok=True)
            for model, version, meta in damage.versions:
                reference = str(meta["reference"])
                try:
                    self._pull(reference, client_for(reference), model=model, version=version,
                               progress=None, force=True)
                except ReconcilerError as exc:
                    raise type(exc)(f"repairing {model} {version}: {exc}") from None
        return list(damage.failures)

    # -- garbage collection -------------------------------------------------------------------------

    def gc(self, desired: Iterable[tuple[str, str]], keep_previous: int = 1) -> GcResult:
        """Remove versions and blobs no desired model refers to.

        For each model still desired, the ``keep_previous`` most recently activated other versions are
        kept for a fast rollback; models no longer desired at all are removed entirely."""
        with self._locked():
            return collect(self, desired, keep_previous)


def read_manifest(store: ArtifactStore, digest: str) -> Manifest:
    """A manifest kept in the store, parsed (for tools that inspect what is activated)."""
    raw = store.blob_path(digest).read_bytes()
    return parse_manifest(raw, digest, f"stored manifest {digest}")
