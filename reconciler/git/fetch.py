"""A fetch that writes nothing when nothing changed.

pygit2's ``Remote.fetch`` rewrites ``FETCH_HEAD`` on every poll (libgit2's ``update_fetchhead``), and libgit2
1.9 truncates it at the start of every download even with that option off: an inode update per cycle, for
ever, on a device's flash.  So a poll first reads the server's ref advertisement (``list_heads``: the same
bytes a fetch with nothing new costs) and fetches only when a wanted ref moved, with ``update_fetchhead`` off
(nothing here reads ``FETCH_HEAD``; the mirror keeps its own remote-tracking refs).  That is pygit2's own
``Remote.fetch`` body with the one option changed, falling back to ``Remote.fetch`` where pygit2's internals
differ.

(``FETCH_HEAD`` must never be a symlink: libgit2 writes it through a lock file renamed over the symlink's
target, so a plain ``Remote.fetch`` as root would replace ``/dev/null`` with a regular file.)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pygit2

FETCH_HEAD = "FETCH_HEAD"


def drop_symlinked_fetch_head(git_dir: Path) -> None:
    """Remove a ``FETCH_HEAD`` symlink an earlier version made (the link only, never its target)."""
    path = git_dir / FETCH_HEAD
    if path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def fetch_if_moved(remote: pygit2.Remote, specs: Mapping[str, str], callbacks: Callable[[], pygit2.RemoteCallbacks],
                   have: Callable[[str], pygit2.Oid | None], repo: pygit2.Repository) -> dict[str, pygit2.Oid]:
    """The server's tips of the refs in ``specs`` (remote ref -> local ref); fetched (one more connection) only
    when one of them differs from ``have(ref)`` or is missing here.  Returns remote ref -> advertised oid."""
    heads = {h.name: h.oid for h in remote.list_heads(callbacks=callbacks())}
    wanted = {ref: heads[ref] for ref in specs if ref in heads}
    moved = [ref for ref, oid in wanted.items() if have(ref) != oid or oid not in repo]
    if moved:
        fetch_quietly(remote, [f"+{ref}:{specs[ref]}" for ref in moved], callbacks(),
                      pygit2.enums.FetchPrune.NO_PRUNE)
    return wanted


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
