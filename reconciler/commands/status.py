"""reconciler status [--repo URL|PATH] [--branch main] [--device NAME] [--format table|json] [--stale-after DURATION]"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, TextIO

from reconciler.errors import UsageError
from reconciler.views.options import add_repo_arguments, open_from_args

if TYPE_CHECKING:
    from reconciler.views.statusview import DeviceRow, StatusView

TABLE_ERROR_LIMIT = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_repo_arguments(parser)
    parser.add_argument("--device", metavar="NAME", help="one device in detail: its models with digest, state, since "
                        "and last errors, drift, conditions and connection")
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument("--stale-after", metavar="DURATION",
                        help="a device silent longer is stale: seconds or 30s, 90m, 12h, 7d "
                             "(default: fleet.yaml spec.status.staleAfter, else 7d)")


def run(args: argparse.Namespace) -> int:
    import pygit2

    from reconciler.quantities import parse_duration
    from reconciler.views.statusview import StatusView

    # Every status commit and tree is read once; libgit2's object cache would keep all 10,000 of them
    # (14 MiB at that size) for no second use.  Process-wide, so it is set here in the verb, not in the view.
    stale_after = None
    if args.stale_after is not None:
        stale_after = parse_duration(args.stale_after)
        if stale_after is None:
            raise UsageError(f"--stale-after {args.stale_after!r}: expected seconds or a duration like 12h or 7d")
    pygit2.settings.enable_caching(False)
    try:
        view = StatusView(open_from_args(args), stale_after=stale_after)
        if args.device:
            from reconciler.views import devicedetail

            one = devicedetail.detail(view, args.device)
            if args.format == "json":
                print(json.dumps(one.to_dict(), indent=2, default=str))
            else:
                devicedetail.write_text(one, sys.stdout)
        else:
            (write_json if args.format == "json" else write_table)(view, sys.stdout)
    finally:
        pygit2.settings.enable_caching(True)  # libgit2's default, for callers in the same process (tests)
    return 0


def _cells(row: DeviceRow) -> list[str]:
    from reconciler.views.statusview import age_text

    error = row.last_error or ""
    if len(error) > TABLE_ERROR_LIMIT:
        error = error[: TABLE_ERROR_LIMIT - 1] + "…"
    name = row.device if row.in_fleet else f"{row.device} (not in fleet)"
    if row.verified == "False":
        error = f"UNVERIFIED: {error}"[:TABLE_ERROR_LIMIT]
    return [
        name,
        row.phase or "-",
        row.convergence,
        age_text(row.age_seconds),
        ("yes" if row.stale else "no") if row.seen else "-",
        error or "-",
        ", ".join(row.models) or "-",
    ]


def write_table(view: StatusView, out: TextIO) -> None:
    # Widths come from what is known before any status document is read, so rows print as they are made.
    device_width = max([len("DEVICE"), *(len(d) + 15 for d in view.devices if d not in view.fleet_devices),
                        *(len(d) for d in view.devices)])
    # models, the one column of unknown width, comes last so that it cannot push the others out of line
    widths = [device_width, 11, 12, 9, 5, TABLE_ERROR_LIMIT]
    header = ["DEVICE", "PHASE", "APPLIED", "LAST SEEN", "STALE", "LAST ERROR", "MODELS"]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, [*widths, 0], strict=True)).rstrip()

    out.write(line(header) + "\n")
    for row in view.rows():
        out.write(line(_cells(row)) + "\n")
    short = str(view.main)[:12]
    out.write(f"\n{view.summary.line()} ({view.fleet.branch}@{short}, stale after "
              f"{_duration(view.stale_after)})\n")


def write_json(view: StatusView, out: TextIO) -> None:
    # Streamed: the devices array is written row by row, so memory stays flat with the fleet's size.
    head = {
        "repo": view.fleet.label,
        "branch": view.fleet.branch,
        "mainCommit": str(view.main),
        "staleAfterSeconds": view.stale_after,
        "generatedAt": view.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    out.write(json.dumps(head)[:-1] + ', "devices": [')
    for i, row in enumerate(view.rows()):
        out.write(("," if i else "") + "\n  " + json.dumps(row.to_dict()))
    out.write(f'\n], "summary": {json.dumps(view.summary.to_dict())}}}\n')


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
