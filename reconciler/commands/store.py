"""``reconciler store verify|gc --data-dir DIR``: check or collect a local artifact store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.artifacts.cli import add_registry_arguments, client_from_args
from reconciler.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["verify", "gc"], help="verify digests, or collect garbage")
    parser.add_argument("--data-dir", type=Path, required=True, help="the store (the agent's data dir)")
    parser.add_argument("--repair", action="store_true", help="verify: fetch damaged content again")
    parser.add_argument("--keep", action="append", default=[], metavar="MODEL=VERSION",
                        help="gc: a desired version (repeatable; default: every activated version)")
    parser.add_argument("--keep-previous", type=int, default=1, metavar="N",
                        help="gc: other versions kept per desired model for rollback (default 1)")
    add_registry_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from reconciler.artifacts.store import ArtifactStore, human

    store = ArtifactStore(args.data_dir)
    if not args.data_dir.is_dir():
        raise UsageError(f"--data-dir {args.data_dir}: no such directory")
    if args.action == "verify":
        failures = store.verify(lambda ref: client_from_args(args, ref), repair=args.repair)
        for line in failures:
            print(line)
        if failures and args.repair:
            print(f"repaired {len(failures)} problem(s)")
            return 0
        if failures:
            print(f"{len(failures)} problem(s) found (--repair fetches them again)", file=sys.stderr)
            return 1
        print(f"store {args.data_dir}: every blob and activated file matches its digest")
        return 0
    if args.keep_previous < 0:
        raise UsageError("--keep-previous must be 0 or more")
    desired: list[tuple[str, str]] = []
    for item in args.keep:
        model, sep, version = item.partition("=")
        if not sep or not model or not version:
            raise UsageError(f"--keep {item!r}: expected MODEL=VERSION")
        desired.append((model, version))
    if not args.keep:
        desired = [(m, v) for m, v, _ in store.versions()]
    result = store.gc(desired, keep_previous=args.keep_previous)
    for model, version in result.removed_versions:
        print(f"removed {model} {version}")
    print(f"freed {human(result.freed_bytes)} ({len(result.removed_versions)} version(s), "
          f"{result.removed_blobs} blob(s))")
    return 0
