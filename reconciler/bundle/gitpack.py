"""The bundle's git content: one pack of the fleet commits (``--since``..``--rev``) and of the status chains,
made with pygit2's pack builder, and on the device the bare repository a fetch reads it from.

A pack, not a git bundle file: libgit2 cannot fetch from git bundles, but it fetches from any local bare
repository.  The device's repository for a bundle holds only the pack and the refs the manifest names, and
borrows the device mirror's objects as an alternate, so history older than ``--since`` (which the device
has) completes it; a device that lacks that history is told so before anything is fetched.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pygit2

from reconciler.errors import IntegrityError

_SUBMODULE = 0o160000


def tree_objects(repo: pygit2.Repository, tree: pygit2.Oid) -> set[pygit2.Oid]:
    """Every tree and blob id under ``tree`` (itself included)."""
    seen: set[pygit2.Oid] = set()
    stack = [tree]
    while stack:
        oid = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        for entry in repo[oid].peel(pygit2.Tree):
            if entry.filemode == _SUBMODULE:
                continue
            if entry.type_str == "tree":
                stack.append(entry.id)
            else:
                seen.add(entry.id)
    return seen


def write_pack(repo: pygit2.Repository, tips: Iterable[pygit2.Oid], out_dir: Path,
               since: pygit2.Oid | None = None) -> int:
    """Pack what ``tips`` reach minus what ``since`` reaches into ``out_dir``; returns the objects packed."""
    have = tree_objects(repo, repo[since].peel(pygit2.Commit).tree_id) if since is not None else set()
    builder = pygit2.PackBuilder(repo)
    added: set[pygit2.Oid] = set()
    for tip in tips:
        walker = repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL)
        if since is not None and repo.descendant_of(tip, since):
            walker.hide(since)
        for commit in walker:
            if commit.id in added:
                continue
            added.add(commit.id)
            builder.add(commit.id)
            for oid in tree_objects(repo, commit.tree_id) - have - added:
                added.add(oid)
                builder.add(oid)
    out_dir.mkdir(parents=True, exist_ok=True)
    builder.write(str(out_dir))
    return len(added)


def open_bundle_repo(path: Path, packs: Iterable[Path], refs: Mapping[str, str],
                     alternate: Path | None) -> pygit2.Repository:
    """A bare repository at ``path`` holding ``packs`` and ``refs``, borrowing objects from ``alternate``."""
    repo = pygit2.init_repository(str(path), bare=True)
    pack_dir = path / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    for pack in packs:
        os.replace(pack, pack_dir / pack.name)
    if alternate is not None:
        (path / "objects" / "info").mkdir(parents=True, exist_ok=True)
        (path / "objects" / "info" / "alternates").write_text(f"{alternate.resolve()}\n")
    repo = pygit2.Repository(str(path))  # opened again: the alternate and the packs are read at open
    for name, oid in refs.items():
        try:
            repo.references.create(name, pygit2.Oid(hex=oid), force=True)
        except (pygit2.GitError, ValueError, KeyError):
            raise IntegrityError(f"the bundle names {name} -> {oid[:12]}, but its git content lacks that "
                                 "commit") from None
    return repo
