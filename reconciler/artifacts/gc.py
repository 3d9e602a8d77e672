"""Garbage collection of the store: versions and blobs that no desired model refers to any more.

Kept apart from ``store`` because it only reads the layout and deletes from it, and its rules (which
previous versions stay for a rollback, what counts as a stray left by a crash) read best on their own.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.artifacts.layout import StoreLayout
from reconciler.durable import fsync_dir


@dataclass(frozen=True)
class GcResult:
    removed_versions: tuple[tuple[str, str], ...]
    removed_blobs: int
    freed_bytes: int


def collect(store: StoreLayout, desired: Iterable[tuple[str, str]], keep_previous: int) -> GcResult:
    """What ``ArtifactStore.gc`` promises; the caller holds the store's lock."""
    wanted = set(desired)
    wanted_models = {m for m, _ in wanted}
    removed: list[tuple[str, str]] = []
    freed = 0
    by_model: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for model, version, meta in store.versions():
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
            link = store.models / model / version
            target = store.models / model / os.readlink(link)
            link.unlink()
            freed += _remove_tree(target)
            removed.append((model, version))
    if store.models.is_dir():
        freed += _remove_strays(store.models)
    referenced: set[str] = set()
    for meta in kept_metas:
        referenced.update(str(d) for d in meta.get("layers", []))
        referenced.add(str(meta.get("manifestDigest")))
        if meta.get("config"):
            referenced.add(str(meta["config"]))
    removed_blobs = 0
    if store.blobs.is_dir():
        for blob in store.blobs.iterdir():
            if f"sha256:{blob.name}" not in referenced:
                freed += blob.stat().st_size if blob.stat().st_nlink == 1 else 0
                blob.unlink()
                removed_blobs += 1
    if store.blobs.is_dir():
        fsync_dir(store.blobs)
    return GcResult(tuple(removed), removed_blobs, freed)


def _remove_strays(models: Path) -> int:
    """Half-built dirs from a crash, temp links, and version dirs no link points to."""
    freed = 0
    for model_dir in models.iterdir():
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
