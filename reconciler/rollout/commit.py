"""One decision, one commit on the fleet branch: files replaced in the tip's tree, optionally signed with an
SSH key (``ssh-keygen -Y sign -n git``, what ``git commit -S`` with ``gpg.format=ssh`` does), so ``git
verify-commit`` and the trust issue's path scopes can check the controller's commits like anyone else's."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import pygit2

from reconciler.errors import AuthError, NotFound

AUTHOR = ("reconciler rollout", "rollout@fleet.invalid")


def replace_files(repo: pygit2.Repository, tree: pygit2.Tree, files: Mapping[str, bytes]) -> pygit2.Oid:
    """A new tree: ``tree`` with each path's blob replaced (paths relative to the root, '/'-separated)."""
    here: dict[str, bytes] = {}
    below: dict[str, dict[str, bytes]] = {}
    for path, data in files.items():
        head, sep, rest = path.partition("/")
        if sep:
            below.setdefault(head, {})[rest] = data
        else:
            here[head] = data
    builder = repo.TreeBuilder(tree)
    for name, data in here.items():
        builder.insert(name, repo.create_blob(data), pygit2.enums.FileMode.BLOB)
    for name, sub in below.items():
        try:
            entry = tree[name]
            subtree = repo[entry.id].peel(pygit2.Tree)
        except KeyError:
            subtree = repo[repo.TreeBuilder().write()].peel(pygit2.Tree)
        builder.insert(name, replace_files(repo, subtree, sub), pygit2.enums.FileMode.TREE)
    oid: pygit2.Oid = builder.write()
    return oid


def sign(payload: str, key: Path) -> str:
    """An SSH signature of ``payload`` in git's namespace (armored, as git stores it in ``gpgsig``)."""
    if not key.exists():
        raise NotFound(f"--sign-key {key}: no such key file")
    try:
        out = subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-n", "git", "-f", str(key)],
                             input=payload.encode(), capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"cannot sign with {key}: {exc}") from None
    if out.returncode != 0:
        raise AuthError(f"cannot sign with {key}: {out.stderr.decode(errors='replace').strip()[:300]}")
    return out.stdout.decode()


def commit(repo: pygit2.Repository, parent: pygit2.Oid, files: Mapping[str, bytes], message: str,
           sign_key: Path | None = None, when: int | None = None) -> pygit2.Oid:
    """A commit on ``parent`` with ``files`` replaced; not on any ref yet."""
    base = repo[parent].peel(pygit2.Commit)
    tree = replace_files(repo, base.tree, files)
    signature = pygit2.Signature(*AUTHOR, when) if when is not None else pygit2.Signature(*AUTHOR)
    if sign_key is None:
        oid: pygit2.Oid = repo.create_commit(None, signature, signature, message, tree, [parent])
        return oid
    # pygit2's stubs say Oid; it returns the commit's text, which is what gets signed
    payload = cast(str, repo.create_commit_string(signature, signature, message, tree, [parent]))
    signed: pygit2.Oid = repo.create_commit_with_signature(payload, sign(payload, sign_key))
    return signed
