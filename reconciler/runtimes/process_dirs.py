"""The layout of the process runtime's state dirs under ``DATA_DIR/process/``: listing the dirs that carry
our ``spec.json``, creating one atomically (a complete temp dir renamed into place), and sweeping temp and
trash dirs a power cut left behind.

Kept apart from ``process.py``: this is the on-disk format (see that module's docstring), with no process in it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from reconciler.model import Workload
from reconciler.runtimes.supervisor import SPEC_FILE, fsync_dir, read_json, write_json_atomic

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEMP_MAX_AGE = 300.0


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part)[:64] or "_"


def entries(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every state dir under ``root`` with its spec: only dirs whose ``spec.json`` names their spec hash."""
    try:
        children = sorted(root.iterdir())
    except FileNotFoundError:
        return []
    found = []
    for path in children:
        if path.name.startswith(".") or not path.is_dir():
            continue
        spec = read_json(path / SPEC_FILE)
        if spec is not None and f"--{spec.get('specHash')}--" in f"{path.name}--":
            found.append((path, spec))
    return found


def create_dir(root: Path, workload: Workload, spec: dict[str, Any]) -> Path:
    """A new state dir holding ``spec``, named after the workload; it appears whole or not at all."""
    parts = [_safe(workload.device), _safe(workload.model), _safe(workload.version), workload.spec_hash]
    # A token per start: a supervisor orphaned by a power cut mid-start never shares a dir with a new one.
    name = "--".join([*parts, uuid.uuid4().hex[:8]])
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(mode=0o700)
    write_json_atomic(tmp / SPEC_FILE, spec)
    final = root / name
    os.rename(tmp, final)
    fsync_dir(root)
    return final


def sweep_temp(root: Path) -> None:
    """Remove temp and trash dirs left by a power cut (old enough that no start is still writing them)."""
    try:
        children = list(root.iterdir())
    except FileNotFoundError:
        return
    now = time.time()
    for path in children:
        if path.name.startswith((".tmp-", ".trash-")) and path.is_dir():
            with contextlib.suppress(OSError):
                if now - path.stat().st_mtime > _TEMP_MAX_AGE:
                    shutil.rmtree(path, ignore_errors=True)
