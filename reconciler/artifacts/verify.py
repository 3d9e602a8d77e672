"""Verification of the store: every blob and every activated file checked against its digest.

Kept apart from ``store`` because it only reads; ``ArtifactStore.verify`` takes the damage found here
and, when asked, repairs it with fresh pulls.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.artifacts.layout import StoreLayout
from reconciler.artifacts.reference import is_digest

_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Damage:
    failures: tuple[str, ...]  # one line per failure
    blobs: tuple[Path, ...]  # blob files whose content does not match their name
    versions: tuple[tuple[str, str, dict[str, Any]], ...]  # (model, version, metadata) with a bad file


def sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            hasher.update(block)
    return "sha256:" + hasher.hexdigest()


def find_damage(store: StoreLayout) -> Damage:
    """Every blob whose content does not match its name, and every activated file or link that changed."""
    failures: list[str] = []
    bad_blobs: list[Path] = []
    if store.blobs.is_dir():
        for blob in sorted(store.blobs.iterdir()):
            if not is_digest(f"sha256:{blob.name}"):
                continue
            actual = sha256_file(blob)
            if actual != f"sha256:{blob.name}":
                failures.append(f"blob sha256:{blob.name}: content does not match (found {actual})")
                bad_blobs.append(blob)
    damaged: list[tuple[str, str, dict[str, Any]]] = []
    for model, version, meta in store.versions():
        problems = _check_version(store.models, model, version, meta)
        failures.extend(problems)
        if problems:
            damaged.append((model, version, meta))
    return Damage(tuple(failures), tuple(bad_blobs), tuple(damaged))


def _check_version(models: Path, model: str, version: str, meta: dict[str, Any]) -> list[str]:
    problems = []
    base = models / model / version
    label = f"models/{model}/{version}"
    for rel, digest in sorted(dict(meta.get("files", {})).items()):
        path = base / rel
        if path.is_symlink() or not path.is_file():
            problems.append(f"{label}/{rel}: missing or not a regular file")
            continue
        actual = sha256_file(path)
        if actual != digest:
            problems.append(f"{label}/{rel}: expected {digest}, found {actual}")
    for rel, target in sorted(dict(meta.get("links", {})).items()):
        path = base / rel
        if not path.is_symlink() or os.readlink(path) != target:
            problems.append(f"{label}/{rel}: symlink changed (expected -> {target})")
    return problems
