"""The command line: parse arguments, dispatch to a command, and map errors to exit codes.

This is the one error boundary: nothing else calls ``sys.exit`` or prints tracebacks.
Command modules stay light to import; heavy libraries (pygit2, oras, docker) load inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Sequence

from reconciler import __version__
from reconciler.errors import ReconcilerError

# verb -> module under reconciler.commands exposing ``add_arguments(parser)`` and ``run(args) -> int``.
COMMANDS: dict[str, str] = {
    "validate": "Check a fleet repository: schema and semantic rules, every problem located.",
    "render": "Print the effective desired state of one device.",
    "plan": "Show which devices change between two revisions, and how.",
    "publish": "Push files to an OCI registry as an artifact and print the pinned reference.",
    "pull": "Pull and activate one artifact into a local store.",
    "store": "Verify or garbage-collect a local artifact store.",
    "agent": "Run the device agent (one cycle with --once).",
    "status": "One row per device from the status branches.",
    "history": "Desired and observed changes of a device or model, merged in time order.",
    "verify": "Check that every commit in BASE..HEAD is signed by an allowed signer within its path scope.",
    "beacon": "Write the change beacon devices poll instead of git (server side).",
    "device-status": "The local view of this device, from the running agent's API socket.",
    "rollout": "Staged rollouts: decide and commit (run), or show each rollout's cohort and counts (status).",
    "device": "Enrol a device (key, git server rule, device file, join bundle) or remove it.",
    "bundle": "Air-gapped updates: create a bundle, apply it on a device, import the status it brings back.",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise _BadUsage(f"{self.prog}: error: {message}")


class _BadUsage(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="reconciler", description="GitOps reconciler for edge-ML fleets.")
    parser.add_argument("--version", action="version", version=f"reconciler {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for verb, help_text in COMMANDS.items():
        name = f"reconciler.commands.{verb.replace('-', '_')}"
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        p = sub.add_parser(verb, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except _BadUsage as exc:
        print(exc, file=sys.stderr)
        return 2
    if getattr(args, "_module", None) is None:
        build_parser().print_help(sys.stderr)
        return 2
    try:
        code: int = args._module.run(args)
        return code
    except ReconcilerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the boundary: a bug must not print a user's data as a traceback
        if os.environ.get("RECONCILER_DEBUG"):
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc} (set RECONCILER_DEBUG=1 for details)", file=sys.stderr)
        return 1
