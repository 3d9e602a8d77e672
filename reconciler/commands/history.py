"""reconciler history (--device NAME | --model NAME) [--repo URL|PATH] [--since DATE] [--format text|json]"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from reconciler.views.options import add_repo_arguments, open_from_args, parse_since

if TYPE_CHECKING:
    from reconciler.views.history import Event


def add_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", help="the timeline of one device")
    which.add_argument("--model", help="the timeline of one model on every device")
    add_repo_arguments(parser)
    parser.add_argument("--since", help="only events from this date or time on (2024-05-01, 2024-05-01T12:00Z, '3 days ago', 12h)")
    parser.add_argument("--format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    from reconciler.views.history import timeline

    since = parse_since(args.since) if args.since else None
    fleet = open_from_args(args)
    main = fleet.main_tip()
    events = timeline(fleet, device=args.device, model=args.model, since=since)
    subject = {"device": args.device} if args.device else {"model": args.model}
    if args.format == "json":
        print(json.dumps({**subject, "repo": fleet.label, "branch": fleet.branch, "mainCommit": str(main),
                          "events": [e.to_dict() for e in events]}, indent=2))
        return 0
    what = f"device {args.device}" if args.device else f"model {args.model}"
    print(f"history of {what}: {fleet.branch}@{str(main)[:12]} and status branches of {fleet.label}, oldest first")
    for event in events:
        print(_text(event))
    if not events:
        print("no changes found" + (f" since {args.since}" if args.since else ""))
    return 0


def _text(event: Event) -> str:
    when = event.time.strftime("%Y-%m-%dT%H:%M:%SZ")
    if event.kind == "desired":
        head = f"{when}  desired   {event.commit[:12]}  {event.who}: {event.message}"
    else:
        signed = f", signed by {event.signed_by}" if event.signed_by else ""
        applied = f" (applied {event.applied[:12]}{signed})" if event.applied else ""
        head = f"{when}  observed  {event.commit[:12]}  {event.device}{applied}"
    return "\n".join([head, *(f"    {line}" for line in event.lines)])
