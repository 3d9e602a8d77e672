"""Command-line options shared by ``status`` and ``history``: where the fleet repo is and how to reach it.

Light to import (``reconciler --help`` loads it); pygit2 loads only in ``open_from_args``.
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import UsageError
from reconciler.quantities import parse_duration

if TYPE_CHECKING:
    from reconciler.views.fleetrepo import FleetRepo


def add_repo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=".",
                        help="a clone or bare repo path (read in place) or a URL: ssh://, https://, file://, "
                             "user@host:path (fetched into a cache, status branches included); default: .")
    parser.add_argument("--branch", default="main", help="the fleet branch (default: main)")
    parser.add_argument("--path", default="", metavar="SUBDIR", help="where the fleet files live in the repo")
    parser.add_argument("--ssh-key", type=Path, help="private key for ssh URLs")
    parser.add_argument("--known-hosts", type=Path, help="verify the ssh server against this known_hosts file")
    parser.add_argument("--status-repo", metavar="URL|PATH",
                        help="the repository holding the status branches, when the agents' statusRepo puts them "
                             "in one of their own (default: the fleet repo)")
    parser.add_argument("--cache-dir", type=Path,
                        help="bare repo that caches a remote URL (default: ~/.cache/reconciler/views/...)")


def open_from_args(args: argparse.Namespace) -> FleetRepo:
    from reconciler.git.mirror import GitAuth
    from reconciler.views.fleetrepo import open_fleet_repo

    auth = GitAuth(ssh_key=args.ssh_key, known_hosts=args.known_hosts)
    return open_fleet_repo(args.repo, branch=args.branch, subdir=args.path, auth=auth, cache_dir=args.cache_dir,
                           status_location=getattr(args, "status_repo", None))


_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*(second|minute|hour|day|week)s?\s+ago$")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``2024-05-01`` or an ISO 8601 time (UTC when it has no zone), ``3 days ago`` (seconds, minutes, hours,
    days, weeks), or a duration back from now as the fleet files write them (``90m``, ``12h``, ``7d``)."""
    now = now or datetime.now(UTC)
    text = value.strip().lower()
    ago = _AGO.match(text)
    if ago:
        return now - timedelta(seconds=float(ago.group(1)) * _UNIT_SECONDS[ago.group(2)])
    if text and text[-1] in "smhd" and (seconds := parse_duration(text)) is not None:
        return now - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {value!r}: expected a date like 2024-05-01, a time like 2024-05-01T12:00:00Z, "
                         "'3 days ago' or a duration back from now like 12h or 7d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
