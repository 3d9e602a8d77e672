"""Where fleet documents come from: a directory, or one revision of a git repository read from its tree
objects (no checkout).  Both answer the same three questions, so loading gives identical results."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from reconciler.errors import NotFound, ReconcilerError, UsageError

if TYPE_CHECKING:  # pygit2 loads with the first GitSource: validate and render of a directory never need it
    import pygit2

YAML_SUFFIXES = (".yaml", ".yml")
_LINK = 0o120000  # git's mode of a symbolic link


class UnsafeFile(ReconcilerError):
    """A fleet file that is not a plain file: it is reported by name and never read."""


class Source(Protocol):
    label: str

    def read(self, path: str) -> bytes | None:
        """Bytes of the file at ``path`` (relative to the fleet root), or None when it does not exist."""
        ...

    def names(self, directory: str) -> list[str]:
        """Document names (file names without .yaml) in ``directory``, sorted."""
        ...

    def key(self, path: str) -> str | None:
        """A cache key that changes whenever the file's content does (the blob id in git)."""
        ...


def _doc_names(files: list[str]) -> list[str]:
    return sorted({f.rsplit(".", 1)[0] for f in files if f.endswith(YAML_SUFFIXES) and not f.startswith(".")})


def doc_path(directory: str, name: str, source: Source) -> str:
    """``directory/name.yaml``, or ``.yml`` when only that exists."""
    base = f"{directory}/{name}" if directory else name
    if source.key(base + ".yaml") is None and source.key(base + ".yml") is not None:
        return base + ".yml"
    return base + ".yaml"


class DirSource:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise NotFound(f"{root}: no such fleet directory")
        self.root = root
        self.label = str(root)

    def read(self, path: str) -> bytes | None:
        """The file's bytes; a symbolic link on the way (the file or a directory above it inside the fleet)
        is refused, never followed: it could point out of the repository, and git would not carry it."""
        self._refuse_links(path)
        try:
            fd = os.open(self.root / path, os.O_RDONLY | os.O_NOFOLLOW)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeFile(f"{path}: a symbolic link: fleet files must be plain files (not followed)") from None
            raise UnsafeFile(f"{path}: cannot read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            return f.read()

    def _refuse_links(self, path: str) -> None:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            rel = "/".join(parts[:i])
            try:
                is_link = stat.S_ISLNK(os.lstat(self.root / rel).st_mode)
            except (FileNotFoundError, NotADirectoryError):
                return
            if is_link:
                raise UnsafeFile(f"{rel}: a symbolic link: fleet files and directories must be plain (not followed)")

    def names(self, directory: str) -> list[str]:
        try:
            return _doc_names(os.listdir(self.root / directory))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def key(self, path: str) -> str | None:
        try:  # lstat: a dangling link is still there, to be reported, not skipped
            st = os.lstat(self.root / path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return f"{path}:{st.st_mtime_ns}:{st.st_size}"


class GitSource:
    """One commit of a repository; ``subdir`` is where the fleet config lives inside the tree."""

    def __init__(self, repo: pygit2.Repository, rev: str | pygit2.Oid, subdir: str = "") -> None:
        import pygit2

        self.repo = repo
        obj = _peel(repo, rev)
        self.commit: pygit2.Commit | None = obj if isinstance(obj, pygit2.Commit) else None
        self.root_tree: pygit2.Tree = obj.tree if isinstance(obj, pygit2.Commit) else obj
        self.subdir = subdir.strip("/")
        tree = self.root_tree
        if self.subdir:
            try:
                sub = tree[self.subdir]
            except KeyError:
                raise NotFound(f"{self.subdir}: no such directory at {rev}") from None
            tree = cast("pygit2.Tree", repo[sub.id])
        self.tree: pygit2.Tree = tree
        self._trees: dict[str, pygit2.Tree | None] = {}
        self.label = f"{rev if isinstance(rev, str) else ''}@{obj.short_id}".lstrip("@")

    def _subtree(self, directory: str) -> pygit2.Tree | None:
        # libgit2 re-reads every tree on a path for each lookup (2 ms through a 10,000-entry devices/ tree);
        # keeping the subtree object makes each lookup a binary search in memory.
        if directory not in self._trees:
            tree: pygit2.Tree | None = self.tree
            for part in filter(None, directory.split("/")):
                try:
                    entry = tree[part] if tree is not None else None
                except KeyError:
                    entry = None
                tree = cast("pygit2.Tree", self.repo[entry.id]) if entry is not None and entry.type_str == "tree" else None
            self._trees[directory] = tree
        return self._trees[directory]

    def _entry(self, path: str) -> pygit2.Object | None:
        directory, _, name = path.rpartition("/")
        tree = self._subtree(directory)
        if tree is None:
            return None
        try:
            return tree[name]
        except KeyError:
            return None

    def read(self, path: str) -> bytes | None:
        entry = self._entry(path)
        if entry is None or entry.type_str != "blob":
            return None
        if entry.filemode == _LINK:  # the blob is the link's target, not a document
            raise UnsafeFile(f"{path}: a symbolic link: fleet files must be plain files (not followed)")
        data: bytes = cast("pygit2.Blob", self.repo[entry.id]).data
        return data

    def names(self, directory: str) -> list[str]:
        sub = self._subtree(directory)
        if sub is None:
            return []
        return _doc_names([str(e.name) for e in sub if e.type_str == "blob"])

    def key(self, path: str) -> str | None:
        entry = self._entry(path)
        return str(entry.id) if entry is not None and entry.type_str == "blob" else None

    def relevant_key(self, device: str) -> str:
        """Ids of everything that can change ``device``'s desired state at this revision: fleet.yaml, the
        groups/, models/ and rollouts/ trees and the device's own file.  Equal keys, equal desired state."""
        parts = [self.key("fleet.yaml"), self.tree_id("groups"), self.tree_id("models"),
                 self.key(f"devices/{device}.yaml") or self.key(f"devices/{device}.yml"), self.tree_id("rollouts")]
        return ":".join(p or "-" for p in parts)

    def tree_id(self, directory: str) -> str | None:
        sub = self._subtree(directory)
        return str(sub.id) if sub is not None else None


def _peel(repo: pygit2.Repository, rev: str | pygit2.Oid) -> pygit2.Commit | pygit2.Tree:
    import pygit2

    """A commit, or a bare tree (the pre-commit hook validates the index written as a tree)."""
    try:
        obj = repo[rev] if isinstance(rev, pygit2.Oid) else repo.revparse_single(rev)
        if obj.type_str == "tree":
            return cast("pygit2.Tree", obj)
        commit: pygit2.Commit = obj.peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise NotFound(f"unknown revision {rev!r} in {repo.path}") from None
    return commit


def open_repo(path: str | Path) -> pygit2.Repository:
    import pygit2

    found = pygit2.discover_repository(str(path))
    if found is None:
        raise UsageError(f"{path}: not a git repository (use a directory path without --rev)")
    repo = pygit2.Repository(found)
    # Inside a pre-receive hook the pushed objects sit in a quarantine directory that libgit2 does not find
    # on its own: add it, and any alternates git names, so the new tip can be read.
    for var in ("GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY"):
        if os.environ.get(var):
            repo.odb.add_disk_alternate(os.environ[var])
    for alt in filter(None, os.environ.get("GIT_ALTERNATE_OBJECT_DIRECTORIES", "").split(os.pathsep)):
        repo.odb.add_disk_alternate(alt)
    return repo


def open_source(path: str | Path, rev: str | None) -> Source:
    """A directory as it is on disk, or with ``rev`` that revision of the repository containing it."""
    p = Path(path)
    if rev is None:
        return DirSource(p)
    repo = open_repo(p)
    workdir = Path(repo.workdir).resolve() if repo.workdir else None
    subdir = ""
    if workdir is not None and p.resolve() != workdir:
        subdir = str(p.resolve().relative_to(workdir))
    return GitSource(repo, rev, subdir)
