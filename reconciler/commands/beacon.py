"""reconciler beacon write [--repo PATH] [--branch main ...] --to FILE|-"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    write = sub.add_parser("write", help="write the beacon document (branch tips, git's info/refs format)",
                           description="Write the change beacon: one '<commit id><TAB>refs/heads/<branch>' line "
                                       "per branch, atomically, for devices configured with repo.beacon.")
    write.add_argument("--repo", type=Path, default=Path("."), help="the fleet repository (default: .)")
    write.add_argument("--branch", action="append", metavar="BRANCH",
                       help="a branch to announce (repeatable; default: main)")
    write.add_argument("--to", required=True, metavar="FILE",
                       help="where to write it: a file under a web server's root, or - for standard output")


def run(args: argparse.Namespace) -> int:
    from reconciler.beacon.publish import branch_tips, publish

    publish(branch_tips(args.repo, args.branch or ["main"]), args.to)
    return 0
