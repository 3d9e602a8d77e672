"""``reconciler verify [--repo R] BASE..HEAD``: the device's signature check, in CI or a server hook.

One line per commit (oldest first), exit 0 when every commit is signed by an allowed signer within its
path scope, 1 otherwise.  ``REV`` alone checks that commit as a device's first apply would (the anchor only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pygit2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("range", metavar="BASE..HEAD", help="commits reachable from HEAD and not from BASE; or one REV")
    parser.add_argument("--repo", default=".", help="the fleet repository (default: the current directory)")
    parser.add_argument("--allowed-signers", type=Path, metavar="FILE",
                        help="the anchor (default: git config reconciler.allowedSigners, then "
                             "gpg.ssh.allowedSignersFile)")
    parser.add_argument("--path", help="the fleet's subdirectory (default: git config reconciler.path, else the root)")
    parser.add_argument("--format", choices=["text", "json"], default="text")


def _config(repo: pygit2.Repository, name: str) -> str | None:
    try:
        value = repo.config[name]
    except KeyError:
        return None
    return str(value) if value else None


def _commit(repo: pygit2.Repository, rev: str) -> pygit2.Oid:
    import pygit2

    from reconciler.errors import NotFound

    try:
        oid: pygit2.Oid = repo.revparse_single(rev).peel(pygit2.Commit).id
        return oid
    except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
        raise NotFound(f"unknown revision {rev!r}") from None


def run(args: argparse.Namespace) -> int:
    from reconciler.errors import UsageError
    from reconciler.fleet.source import open_repo
    from reconciler.trust.anchor import load_signers
    from reconciler.trust.commits import Policy, verify_range

    repo = open_repo(args.repo)
    signers = args.allowed_signers or next(
        (Path(v) for v in (_config(repo, "reconciler.allowedSigners"), _config(repo, "gpg.ssh.allowedSignersFile"))
         if v), None)
    if signers is None:
        raise UsageError("no allowed signers: give --allowed-signers FILE or set git config reconciler.allowedSigners")
    path = (args.path if args.path is not None else _config(repo, "reconciler.path") or "").strip("/")
    base_rev, dots, head_rev = args.range.partition("..")
    if not dots:
        base_rev, head_rev = "", args.range
    base = _commit(repo, base_rev) if base_rev else None
    head = _commit(repo, head_rev or "HEAD")
    verdict = verify_range(repo, base, head, Policy(load_signers(signers), path))
    if args.format == "json":
        print(json.dumps({"ok": verdict.ok, "commits": [
            {"commit": c.commit, "author": c.author, "summary": c.summary, "verdict": c.code, "detail": c.detail,
             "signer": c.signer, "key": c.key} for c in verdict.checks]}, indent=2))
    else:
        for c in verdict.checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.line()}")
        print(verdict.message())
    return 0 if verdict.ok else 1
