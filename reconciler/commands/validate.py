"""reconciler validate [PATH] [--rev REV] [--format text|json]"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default=".", help="fleet directory, or a path inside a git repository")
    parser.add_argument("--rev", help="validate this git revision (read from git objects, no checkout)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--max-file-size", default="1Mi", metavar="SIZE",
                        help="refuse a fleet file larger than this, unread (default 1Mi)")


def run(args: argparse.Namespace) -> int:
    from reconciler.errors import UsageError
    from reconciler.fleet.document import Limits
    from reconciler.fleet.source import open_source
    from reconciler.fleet.validate import validate
    from reconciler.fleet.view import FleetView
    from reconciler.quantities import parse_memory

    max_bytes = parse_memory(args.max_file_size)
    if not max_bytes:
        raise UsageError(f"--max-file-size {args.max_file_size!r} is not a size like 1Mi or 512k")
    source = open_source(args.path, args.rev)
    problems = validate(FleetView(source, limits=Limits(max_bytes=max_bytes)))
    errors = [p for p in problems if p.severity == "error"]
    if args.format == "json":
        print(json.dumps({"source": source.label, "valid": not errors,
                          "problems": [p.to_dict() for p in problems]}, indent=2))
    else:
        for p in problems:
            print(p.format())
        warnings = len(problems) - len(errors)
        also = f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else ""
        if errors:
            print(f"{len(errors)} problem{'s' if len(errors) != 1 else ''} in {source.label}{also}")
        else:
            print(f"{source.label}: valid{also}")
    return 1 if errors else 0
