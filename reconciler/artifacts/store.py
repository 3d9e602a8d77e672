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
import json
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
from typing import Any

from reconciler.artifacts.archive import extract
from reconciler.artifacts.manifest import Descriptor, Manifest, parse_manifest, safe_relative_path
from reconciler.artifacts.reference import Reference
from reconciler.artifacts.registry import RegistryClient
from reconciler.durable import fsync_dir
from reconciler.errors import IntegrityError, InvalidConfig, ReconcilerError, Stalled, Waiting

META = ".reconciler-manifest.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PullResult:
    path: Path
    manifest_digest: str
    bytes_downloaded: int
    seconds: float
    cached: bool


@dataclass(frozen=True)
class GcResult:
    removed_versions: tuple[tuple[str, str], ...]
    removed_blobs: int
    freed_bytes: int


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()


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


class ArtifactStore:
    """Verified, resumable, deduplicated artifact pulls into ``data_dir``."""

    concurrency = 4  # layers fetched at once
    max_extract_bytes = 16 * 1024**3  # cap on what one version's archives may expand to
    reserve_bytes = 64 * 1024**2  # free space kept beyond what a pull needs

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.blobs = self.root / "blobs" / "sha256"
        self.ingest = self.root / "ingest"
        self.models = self.root / "models"

    # -- paths and layout -------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or not _HEX.match(hexdigest):
            raise IntegrityError(f"unsupported digest {digest!r}")
        return self.blobs / hexdigest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def _ensure_dirs(self) -> None:
        for d in (self.blobs, self.ingest, self.models):
            d.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time per store (the kernel drops the lock if the process dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".store.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_meta(self, model: str, version: str) -> dict[str, Any] | None:
        link = self.models / model / version
        try:
            meta: dict[str, Any] = json.loads((link / META).read_text())
        except (OSError, ValueError):
            return None
        return meta

    def activated(self, model: str, version: str) -> Path | None:
        """The activated directory of a model version, or None when there is none."""
        link = self.models / model / version
        return link if link.is_symlink() and self._read_meta(model, version) is not None else None

    def versions(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(model, version, metadata) of every activated version."""
        found = []
        if not self.models.is_dir():
            return []
        for model_dir in sorted(self.models.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            for entry in sorted(model_dir.iterdir()):
                if entry.is_symlink() and not entry.name.startswith("."):
                    meta = self._read_meta(model_dir.name, entry.name)
                    if meta is not None:
                        found.append((model_dir.name, entry.name, meta))
        return found

    # -- pull ---------------------------------------------------------------------------------------

    def pull(self, ref: str, client: RegistryClient, *, model: str, version: str,
             progress: Callable[[int, int], None] | None = None) -> PullResult:
        """Pull ``ref`` and activate it as ``models/<model>/<version>``; idempotent."""
        return self._pull(ref, client, model=model, version=version, progress=progress, force=False)

    def _pull(self, ref: str, client: RegistryClient, *, model: str, version: str,
              progress: Callable[[int, int], None] | None, force: bool) -> PullResult:
        started = time.monotonic()
        reference = Reference.parse(ref)
        _check_name(model, "model")
        _check_name(version, "version")
        link = self.models / model / version
        meta = self._read_meta(model, version)
        # Pinned and already active: no network at all.
        if not force and meta and reference.digest and meta.get("manifestDigest") == reference.digest:
            return PullResult(link, reference.digest, 0, time.monotonic() - started, True)
        with self._locked():
            self._ensure_dirs()
            manifest = client.get_manifest(reference)
            meta = self._read_meta(model, version)
            if not force and meta and meta.get("manifestDigest") == manifest.digest:
                return PullResult(link, manifest.digest, 0, time.monotonic() - started, True)
            where = str(reference)
            self._check_layers(manifest, where)
            missing = list({d.digest: d for d in manifest.layers if not self.has_blob(d.digest)}.values())
            self._check_disk(manifest, missing, where)
            downloaded = self._fetch(reference, client, manifest, missing, progress)
            self._store_manifest(manifest)
            path = self._activate(model, version, reference.pinned(manifest.digest), manifest)
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

    def _fetch(self, reference: Reference, client: RegistryClient, manifest: Manifest,
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

    def _activate(self, model: str, version: str, pinned: Reference, manifest: Manifest) -> Path:
        model_dir = self.models / model
        model_dir.mkdir(parents=True, exist_ok=True)
        link = model_dir / version
        if link.exists() and not link.is_symlink():
            raise Stalled(f"{link} exists and is not a link made by the store; move it away")
        build = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
        build.mkdir()
        try:
            files: dict[str, str] = {}
            links: dict[str, str] = {}
            budget = self.max_extract_bytes
            for layer in manifest.layers:
                blob = self.blob_path(layer.digest)
                kind = layer.is_archive
                if kind:
                    out = extract(blob, build, compression=kind, max_bytes=budget,
                                  what=f"{pinned}: layer {layer.digest}")
                    budget -= out.size
                    files.update(out.files)
                    links.update(out.links)
                    continue
                title = safe_relative_path(layer.title or "", f"{pinned}: layer title")
                dest = build / title
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(blob, dest)
                except OSError:  # another filesystem, or links not supported
                    shutil.copyfile(blob, dest)
                    os.chmod(dest, 0o444)
                files[title] = layer.digest
            meta = {
                "model": model,
                "version": version,
                "reference": str(pinned),
                "manifestDigest": manifest.digest,
                "config": manifest.config.digest if manifest.config else None,
                "layers": [d.digest for d in manifest.layers],
                "files": files,
                "links": links,
                "activatedAt": time.time(),
            }
            with open(build / META, "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(build)
            final = model_dir / f".v-{version}-{manifest.digest[7:19]}-{uuid.uuid4().hex[:6]}"
            os.rename(build, final)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        old = Path(os.readlink(link)) if link.is_symlink() else None
        tmp_link = model_dir / f".link-{version}-{uuid.uuid4().hex[:8]}"
        os.symlink(final.name, tmp_link)
        os.replace(tmp_link, link)
        fsync_dir(model_dir)
        if old is not None and old.name != final.name:
            shutil.rmtree(model_dir / old.name, ignore_errors=True)
        return link

    # -- verify -------------------------------------------------------------------------------------

    def verify(self, client_for: Callable[[str], RegistryClient] | None = None,
               repair: bool = False) -> list[str]:
        """Check every blob and activated file against its digest; returns one line per failure.

        With ``repair``, corrupt blobs are deleted and each damaged version is pulled again from the
        registry (``client_for(reference)`` gives the client); a repair that fails raises."""
        failures: list[str] = []
        bad_blobs: list[Path] = []
        if self.blobs.is_dir():
            for blob in sorted(self.blobs.iterdir()):
                if not _HEX.match(blob.name):
                    continue
                actual = _sha256_file(blob)
                if actual != f"sha256:{blob.name}":
                    failures.append(f"blob sha256:{blob.name}: content does not match (found {actual})")
                    bad_blobs.append(blob)
        damaged: list[tuple[str, str, dict[str, Any]]] = []
        for model, version, meta in self.versions():
            problems = self._verify_version(model, version, meta)
            failures.extend(problems)
            if problems:
                damaged.append((model, version, meta))
        if repair and failures:
            if client_for is None:
                raise Stalled("cannot repair the store without registry access")
            with self._locked():
                for blob in bad_blobs:
                    blob.unlink(missing_ok=True)
            for model, version, meta in damaged:
                reference = str(meta["reference"])
                try:
                    self._pull(reference, client_for(reference), model=model, version=version,
                               progress=None, force=True)
                except ReconcilerError as exc:
                    raise type(exc)(f"repairing {model} {version}: {exc}") from None
        return failures

    def _verify_version(self, model: str, version: str, meta: dict[str, Any]) -> list[str]:
        problems = []
        base = self.models / model / version
        label = f"models/{model}/{version}"
        for rel, digest in sorted(dict(meta.get("files", {})).items()):
            path = base / rel
            if path.is_symlink() or not path.is_file():
                problems.append(f"{label}/{rel}: missing or not a regular file")
                continue
            actual = _sha256_file(path)
            if actual != digest:
                problems.append(f"{label}/{rel}: expected {digest}, found {actual}")
        for rel, target in sorted(dict(meta.get("links", {})).items()):
            path = base / rel
            if not path.is_symlink() or os.readlink(path) != target:
                problems.append(f"{label}/{rel}: symlink changed (expected -> {target})")
        return problems

    # -- garbage collection -------------------------------------------------------------------------

    def gc(self, desired: Iterable[tuple[str, str]], keep_previous: int = 1) -> GcResult:
        """Remove versions and blobs no desired model refers to.

        For each model still desired, the ``keep_previous`` most recently activated other versions are
        kept for a fast rollback; models no longer desired at all are removed entirely."""
        wanted = set(desired)
        wanted_models = {m for m, _ in wanted}
        removed: list[tuple[str, str]] = []
        freed = 0
        with self._locked():
            by_model: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for model, version, meta in self.versions():
                by_model.setdefault(model, []).append((version, meta))
            kept_metas: list[dict[str, Any]] = []
            for model, entries in by_model.items():
                others = sorted((e for e in entries if (model, e[0]) not in wanted),
                                key=lambda e: float(e[1].get("activatedAt", 0)), reverse=True)
                spare = others[:keep_previous] if model in wanted_models else []
                for version, meta in entries:
                    if (model, version) in wanted or (version, meta) in spare:
                        kept_metas.append(meta)
                        continue
                    link = self.models / model / version
                    target = self.models / model / os.readlink(link)
                    link.unlink()
                    freed += _remove_tree(target)
                    removed.append((model, version))
            if self.models.is_dir():
                freed += self._remove_strays()
            referenced: set[str] = set()
            for meta in kept_metas:
                referenced.update(str(d) for d in meta.get("layers", []))
                referenced.add(str(meta.get("manifestDigest")))
                if meta.get("config"):
                    referenced.add(str(meta["config"]))
            removed_blobs = 0
            if self.blobs.is_dir():
                for blob in self.blobs.iterdir():
                    if f"sha256:{blob.name}" not in referenced:
                        freed += blob.stat().st_size if blob.stat().st_nlink == 1 else 0
                        blob.unlink()
                        removed_blobs += 1
            if self.blobs.is_dir():
                fsync_dir(self.blobs)
        return GcResult(tuple(removed), removed_blobs, freed)

    def _remove_strays(self) -> int:
        """Half-built dirs from a crash, temp links, and version dirs no link points to."""
        freed = 0
        for model_dir in self.models.iterdir():
            if not model_dir.is_dir() or model_dir.is_symlink():
                continue
            targets = {os.readlink(e) for e in model_dir.iterdir()
                       if e.is_symlink() and not e.name.startswith(".")}
            for entry in model_dir.iterdir():
                if entry.name.startswith(".link-"):
                    entry.unlink()
                elif entry.name.startswith((".tmp-", ".v-")) and entry.name not in targets:
                    freed += _remove_tree(entry)
            if not any(model_dir.iterdir()):
                model_dir.rmdir()
        return freed


def _remove_tree(path: Path) -> int:
    """Remove a directory; returns the bytes this frees (files shared with blobs count with the blob)."""
    freed = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if st.st_nlink == 1:
                freed += st.st_size
    shutil.rmtree(path, ignore_errors=True)
    return freed


def read_manifest(store: ArtifactStore, digest: str) -> Manifest:
    """A manifest kept in the store, parsed (for tools that inspect what is activated)."""
    raw = store.blob_path(digest).read_bytes()
    return parse_manifest(raw, digest, f"stored manifest {digest}")
