"""reconciler rollout run --repo URL [--status-repo URL] (--once | --interval S) [--sign-key KEY]
reconciler rollout status --repo URL [--status-repo URL] [NAME] [--format text|json]

Both read the status branches from --status-repo when the agents' statusRepo keeps them out of the fleet repo."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import UsageError
from reconciler.views.options import add_repo_arguments

if TYPE_CHECKING:
    from reconciler.rollout.controller import Evaluation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=type(parser))
    run_p = sub.add_parser("run", help="decide every active rollout and commit the decisions",
                           description="Read the status branches, decide (advance, pause, abort, complete) and "
                                       "commit each decision to the fleet branch.")
    status_p = sub.add_parser("status", help="each rollout's step, cohort and counts (read only)",
                              description="Each rollout's step, cohort and counts, and the decision now due.")
    for p in (run_p, status_p):
        add_repo_arguments(p)  # --status-repo too: where the agents' statusRepo puts the status branches
        p.add_argument("--format", choices=["text", "json"], default="text")
    once = run_p.add_mutually_exclusive_group(required=True)
    once.add_argument("--once", action="store_true", help="one run, then exit")
    once.add_argument("--interval", type=float, metavar="S", help="run every S seconds until interrupted")
    run_p.add_argument("--sign-key", type=Path, metavar="KEY",
                       help="sign each decision commit with this SSH private key (git's gpg.format=ssh)")
    run_p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    status_p.add_argument("name", nargs="?", help="one rollout: also list its cohort's devices")


def run(args: argparse.Namespace) -> int:
    if args.action == "run":
        return _run(args)
    return _status(args)


def _run(args: argparse.Namespace) -> int:
    import logging
    import sys
    import time

    from reconciler.errors import Transient
    from reconciler.git.mirror import FleetMirror, GitAuth
    from reconciler.rollout.controller import Controller
    from reconciler.views.fleetrepo import default_cache_dir

    if args.interval is not None and args.interval <= 0:
        raise UsageError(f"--interval {args.interval:g}: expected a positive number of seconds")
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cache = args.cache_dir or default_cache_dir(args.repo).with_suffix(".rollout.git")
    auth = GitAuth(ssh_key=args.ssh_key, known_hosts=args.known_hosts)
    mirror = FleetMirror(cache, args.repo, args.branch, auth)
    controller = Controller(mirror, args.path, args.status_repo, args.sign_key, auth)
    while True:
        try:
            results = controller.run_once(time.time())
        except Transient as exc:
            if args.once:
                raise
            logging.getLogger("reconciler.rollout").warning("run failed, trying again in %gs: %s", args.interval, exc)
        else:
            _print(results, args.format, decided=True)
        if args.once:
            return 0
        time.sleep(args.interval)


def _status(args: argparse.Namespace) -> int:
    import time

    from reconciler.errors import NotFound
    from reconciler.rollout.controller import evaluate
    from reconciler.views.options import open_from_args

    fleet = open_from_args(args)
    results = evaluate(fleet, fleet.main_tip(), time.time())
    if args.name:
        results = [e for e in results if e.rollout.name == args.name]
        if not results:
            raise NotFound(f"no rollout {args.name!r} (there is no rollouts/{args.name}.yaml on {args.branch})")
    _print(results, args.format, decided=False, devices=bool(args.name))
    return 0


def _print(results: list[Evaluation], fmt: str, *, decided: bool, devices: bool = False) -> None:
    if fmt == "json":
        print(json.dumps([_as_dict(e, devices) for e in results], indent=2))
        return
    if not results:
        print("no rollouts")
        return
    for e in results:
        r, c = e.rollout, e.counts
        head = (f"{r.name}: {r.model} {r.from_version} -> {r.to_version} in group {r.group}, {r.where()}, "
                f"{r.phase}")
        if r.active:
            head += f"; cohort {c.cohort}: {c.healthy} healthy, {c.failed} failed, {c.unknown} unknown"
        print(head)
        if r.active:
            verb = ("decided" if e.commit else "no decision") if decided else "now"
            print(f"  {verb}: {e.decision.message}" + (f" (commit {e.commit[:12]})" if e.commit else ""))
        if devices:
            for m in e.members:
                print(f"  {m.device:<24} {m.verdict:<8} step {m.joined + 1}  {m.detail}")


def _as_dict(e: Evaluation, devices: bool) -> dict[str, object]:
    r = e.rollout
    out: dict[str, object] = {
        "name": r.name, "group": r.group, "model": r.model, "from": r.from_version, "to": r.to_version,
        "step": r.step + 1, "steps": len(r.steps), "phase": r.phase, "counts": e.counts.to_dict(),
        "decision": {"kind": e.decision.kind, "message": e.decision.message, "step": e.decision.step + 1,
                     "phase": e.decision.phase},
        "commit": e.commit,
    }
    if devices:
        out["devices"] = [{"device": m.device, "verdict": m.verdict, "joinedStep": m.joined + 1,
                           "detail": m.detail} for m in e.members]
    return out
