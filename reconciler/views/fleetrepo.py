"""The fleet repository as the views see it: a local clone read in place, or a remote URL fetched into a
cache bare repo (every branch, ``status/*`` included).

A local repository may hold a status branch twice: ``refs/heads/status/<device>`` (a device's own data dir,
with commits queued for push) and ``refs/remotes/origin/status/<device>`` (what the server had at the last
fetch).  The newer one counts: the descendant when one contains the other, else the later commit.

Status branches may live in a repository of their own (the agent's ``statusRepo``): ``status_repo`` is then
where they are read, and the fleet repository's own ``status/*`` branches, if any, are ignored.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.errors import NotFound
from reconciler.git.location import is_url
from reconciler.git.mirror import REMOTE, FleetMirror, GitAuth, redact

STATUS_PREFIX = "status/"
_HEADS = "refs/heads/"
_REMOTES = f"refs/remotes/{REMOTE}/"


def is_remote(location: str) -> bool:
    """URLs (``ssh://``, ``https://``, ``file://``) and scp-like ``user@host:path`` are fetched; the rest is a
    local path read in place."""
    return is_url(location)


def default_cache_dir(url: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(redact(url).encode()).hexdigest()[:16]
    return base / "reconciler" / "views" / f"{key}.git"


@dataclass
class FleetRepo:
    """One repository, its fleet branch and where the fleet files live inside it."""

    repo: pygit2.Repository
    branch: str
    subdir: str
    label: str  # the path or the URL (without password) to name in messages
    status_repo: pygit2.Repository | None = None  # a separate status repository; None: ``repo`` holds them

    @property
    def statuses(self) -> pygit2.Repository:
        """The repository that holds the status branches (and their commits)."""
        return self.status_repo if self.status_repo is not None else self.repo

    def main_tip(self) -> pygit2.Oid:
        tip = self._newest(f"{_HEADS}{self.branch}", f"{_REMOTES}{self.branch}")
        if tip is None:
            raise NotFound(f"{self.label}: branch {self.branch!r} not found")
        return tip

    def status_tips(self) -> dict[str, pygit2.Oid]:
        """device -> tip of its status branch (the newer of the local and remote-tracking refs)."""
        heads: dict[str, pygit2.Oid] = {}
        tracked: dict[str, pygit2.Oid] = {}
        for ref in self.statuses.references.iterator():
            name, target = ref.name, ref.target
            if not isinstance(target, pygit2.Oid):
                continue  # a symbolic ref (origin/HEAD) names a branch listed on its own
            for prefix, into in ((_HEADS + STATUS_PREFIX, heads), (_REMOTES + STATUS_PREFIX, tracked)):
                if name.startswith(prefix):
                    into[name[len(prefix):]] = target
        tips = heads
        for device, oid in tracked.items():
            tips[device] = self._pick(tips.get(device), oid) or oid
        return tips

    def status_tip(self, device: str) -> pygit2.Oid | None:
        return self._newest(f"{_HEADS}{STATUS_PREFIX}{device}", f"{_REMOTES}{STATUS_PREFIX}{device}",
                            self.statuses)

    def _newest(self, local: str, tracking: str, repo: pygit2.Repository | None = None) -> pygit2.Oid | None:
        repo = self.repo if repo is None else repo
        return self._pick(self._target(local, repo), self._target(tracking, repo), repo)

    def _target(self, name: str, repo: pygit2.Repository) -> pygit2.Oid | None:
        ref = repo.references.get(name)
        if ref is None:
            return None
        target = ref.resolve().target
        return target if isinstance(target, pygit2.Oid) and target in repo else None

    def _pick(self, a: pygit2.Oid | None, b: pygit2.Oid | None,
              repo: pygit2.Repository | None = None) -> pygit2.Oid | None:
        repo = self.statuses if repo is None else repo
        if a is None or b is None or a == b:
            return a or b
        try:
            if repo.descendant_of(a, b):
                return a
            if repo.descendant_of(b, a):
                return b
            ta, tb = repo[a].peel(pygit2.Commit).commit_time, repo[b].peel(pygit2.Commit).commit_time
        except (KeyError, ValueError, pygit2.GitError):
            return a
        return a if ta >= tb else b


def open_fleet_repo(
    location: str,
    *,
    branch: str = "main",
    subdir: str = "",
    auth: GitAuth | None = None,
    cache_dir: Path | None = None,
    timeout: float = 60,
    status_location: str | None = None,
) -> FleetRepo:
    """Open a local path in place, or fetch a remote URL (all branches, pruned) into ``cache_dir``; the same
    for ``status_location``, the status repository, when the status branches live in one of their own."""
    repo, label = _open(location, branch, auth, cache_dir, timeout)
    status_repo = None
    if status_location is not None:
        status_cache = None if cache_dir is None else cache_dir.with_name(cache_dir.name + "-status")
        status_repo, status_label = _open(status_location, branch, auth, status_cache, timeout)
        label = f"{label} (status: {status_label})"
    return FleetRepo(repo, branch, subdir.strip("/"), label, status_repo)


def _open(location: str, branch: str, auth: GitAuth | None, cache_dir: Path | None,
          timeout: float) -> tuple[pygit2.Repository, str]:
    if not is_remote(location):
        return _open_local(location), location
    mirror = FleetMirror(cache_dir or default_cache_dir(location), location, branch, auth or GitAuth(),
                         timeout=timeout)
    mirror.fetch_all()
    return mirror.repo, redact(mirror.url)


def _open_local(location: str) -> pygit2.Repository:
    path = Path(location).expanduser()
    if not path.exists():
        raise NotFound(f"{location}: no such repository")
    found = pygit2.discover_repository(str(path))
    if found is None:
        raise NotFound(f"{location}: not a git repository")
    try:
        return pygit2.Repository(found)
    except pygit2.GitError as exc:
        raise NotFound(f"{location}: cannot open the repository: {exc}") from None


