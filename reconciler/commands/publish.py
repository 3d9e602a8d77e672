"""``reconciler publish FILE... --to REGISTRY/REPO:TAG``: push an artifact, print its pinned reference."""

from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

from reconciler.artifacts.cli import add_registry_arguments, client_from_args
from reconciler.errors import UsageError

REQUIREMENTS = "dev.reconciler.requirements"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", metavar="FILE", nargs="+", type=Path,
                        help="files or directories (directories are pushed as tar+gzip layers)")
    parser.add_argument("--to", required=True, metavar="REGISTRY/REPO:TAG", help="where to push")
    parser.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                        help="manifest annotation (repeatable)")
    parser.add_argument("--requirement", action="append", default=[], metavar="NAME",
                        help="runtime requirement recorded with the artifact, e.g. pytorch (repeatable)")
    parser.add_argument("--sign-key", type=Path, metavar="KEY.pem",
                        help="sign the files (OpenSSF Model Signing, ECDSA private key) and publish model.sig with them")
    add_registry_arguments(parser)


def _git_commit(start: Path) -> str | None:
    """The commit checked out where publish runs, if that is a git checkout (provenance)."""
    import pygit2

    try:
        found = pygit2.discover_repository(str(start))
        if not found:
            return None
        repo = pygit2.Repository(found)
        return None if repo.head_is_unborn else str(repo.head.target)
    except (pygit2.GitError, KeyError, ValueError):
        return None


def provenance(args: argparse.Namespace) -> dict[str, str]:
    annotations = {"org.opencontainers.image.created": datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")}
    commit = _git_commit(Path(os.getcwd()))
    if commit:
        annotations["org.opencontainers.image.revision"] = commit
    if args.requirement:
        annotations[REQUIREMENTS] = ",".join(args.requirement)
    for item in args.annotation:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--annotation {item!r}: expected KEY=VALUE")
        annotations[key] = value
    return annotations


def run(args: argparse.Namespace) -> int:
    from reconciler.artifacts.reference import Reference

    ref = Reference.parse(args.to)
    if ref.digest:
        raise UsageError(f"--to {args.to}: give a tag to push to, not a digest")
    if ref.tag is None:
        ref = ref.with_tag("latest")
    names = [p.name for p in args.files]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"two files would have the same title in the artifact: {', '.join(duplicates)}")
    client = client_from_args(args, str(ref))
    if args.sign_key is None:
        digest = client.push(ref, args.files, provenance(args))
    else:
        import tempfile

        from reconciler.trust.models import SIGNATURE_FILE
        from reconciler.trust.modelsign import sign

        if SIGNATURE_FILE in names:
            raise UsageError(f"--sign-key makes {SIGNATURE_FILE}: do not pass one as well")
        with tempfile.TemporaryDirectory(prefix="reconciler-sign-") as tmp:
            signature = Path(tmp) / SIGNATURE_FILE
            signature.write_bytes(sign(args.files, args.sign_key, ref.repository.rsplit("/", 1)[-1]))
            digest = client.push(ref, [*args.files, signature], provenance(args))
    print(ref.pinned(digest))
    return 0
