"""Writing the beacon on the server side: read the branch tips of a repository, write the document atomically
where a web server, object store sync or CDN origin picks it up (``hooks/post-receive`` calls this)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from reconciler.beacon.document import render
from reconciler.durable import write_atomic
from reconciler.errors import NotFound


def branch_tips(repo_path: Path, branches: Sequence[str]) -> dict[str, str]:
    """``refs/heads/<branch>`` -> commit id for each branch of the repository at ``repo_path``."""
    import pygit2

    found = pygit2.discover_repository(str(repo_path))
    if found is None:
        raise NotFound(f"{repo_path}: not a git repository")
    repo = pygit2.Repository(found)
    tips = {}
    for branch in branches:
        ref = repo.references.get(f"refs/heads/{branch}")
        if ref is None:
            raise NotFound(f"{repo_path}: branch {branch!r} not found")
        tips[ref.name] = str(ref.resolve().peel(pygit2.Commit).id)
    return tips


def publish(tips: dict[str, str], dest: str) -> bytes:
    """Write the beacon for ``tips`` to the file ``dest`` (temp file, fsync, rename: a web server never serves
    half of it), or to standard output for ``-`` (to pipe into an object-store client)."""
    data = render(tips)
    if dest == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return data
    path = Path(dest)
    if not path.parent.is_dir():
        raise NotFound(f"{dest}: directory {path.parent} does not exist")
    try:
        old = path.stat()
        if path.read_bytes() == data:
            return data  # unchanged: keep the file, its mtime and the server's ETag
    except FileNotFoundError:
        old = None
    write_atomic(path, data, mode=0o644)
    if old is not None and int(old.st_mtime) >= int(time.time()):
        # nginx and busybox httpd derive ETag and Last-Modified from the mtime in whole seconds and the size,
        # which a beacon never changes: a second push within the same second would be answered 304.
        later = int(old.st_mtime) + 1
        os.utime(path, (later, later))
    return data
