"""A fetch that writes nothing when nothing changed.

pygit2's ``Remote.fetch`` leaves libgit2's ``update_fetchhead`` on, so every poll rewrites ``FETCH_HEAD``
in the device's bare clone even when the server has nothing new: a file write per cycle, for ever, on
flash storage.  Nothing here reads ``FETCH_HEAD`` (the mirror keeps its own remote-tracking refs), so
``fetch_quietly`` turns it off: it is pygit2's own ``Remote.fetch`` body with that one option changed,
falling back to ``Remote.fetch`` where pygit2's internals differ (another version).  libgit2 1.9 still
truncates ``FETCH_HEAD`` at the start of every download (``O_TRUNC``: an inode update each time), so
``silence_fetch_head`` makes it a symlink to ``/dev/null``, where that truncation touches no disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pygit2

FETCH_HEAD = "FETCH_HEAD"


def silence_fetch_head(git_dir: Path) -> None:
    """Point ``git_dir/FETCH_HEAD`` at the null device (atomically: a temp link renamed over it)."""
    path = git_dir / FETCH_HEAD
    with contextlib.suppress(OSError):
        if os.readlink(path) == os.devnull:
            return
    tmp = git_dir / f".{FETCH_HEAD}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(os.devnull, tmp)
        os.replace(tmp, path)
    except OSError:  # a file system without symlinks: FETCH_HEAD stays a file, only wear is lost
        with contextlib.suppress(OSError):
            tmp.unlink()


def fetch_quietly(remote: pygit2.Remote, refspecs: Sequence[str] | None, callbacks: pygit2.RemoteCallbacks,
                  prune: pygit2.enums.FetchPrune) -> None:
    """``remote.fetch(refspecs, callbacks=callbacks, prune=prune)`` without writing FETCH_HEAD."""
    try:
        from pygit2.callbacks import git_fetch_options, git_proxy_options
        from pygit2.ffi import C
        from pygit2.utils import StrArray
    except ImportError:  # pragma: no cover - a pygit2 without these internals
        remote.fetch(list(refspecs) if refspecs is not None else None, callbacks=callbacks, prune=prune)
        return
    payload: Any
    with git_fetch_options(callbacks) as payload:
        opts = payload.fetch_options
        opts.prune = prune
        opts.update_fetchhead = 0
        with git_proxy_options(remote, opts.proxy_opts, None), \
                StrArray(list(refspecs) if refspecs is not None else None) as arr:
            err = C.git_remote_fetch(remote._remote, arr.ptr, opts, pygit2.ffi.NULL)
            payload.check_error(err)
