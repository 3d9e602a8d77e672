"""reconciler plan BASE HEAD [--repo PATH] [--format text|markdown|json]"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.fleet.change import Plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", help="the revision before the change (e.g. main)")
    parser.add_argument("head", help="the revision after the change (e.g. the pull request's branch)")
    parser.add_argument("--repo", default=".", help="the git repository (or a subdirectory holding the fleet)")
    parser.add_argument("--format", choices=["text", "markdown", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reconciler.fleet.change import plan
    from reconciler.fleet.source import open_repo

    repo = open_repo(args.repo)
    subdir = ""
    if repo.workdir:
        here, top = Path(args.repo).resolve(), Path(repo.workdir).resolve()
        if here != top and top in here.parents:
            subdir = str(here.relative_to(top))
    result = plan(repo, args.base, args.head, subdir)
    print({"text": _text, "markdown": _markdown, "json": _json}[args.format](result))
    return 1 if result.problems else 0


def _count(result: Plan) -> str:
    n = len(result.devices)
    return f"{n} device{'s' if n != 1 else ''} affected"


def _text(result: Plan) -> str:
    out = [f"plan {result.base}..{result.head}: {len(result.changed_paths)} file(s) changed"]
    for d in result.devices:
        out.append(f"{d.device} ({d.status})")
        out += [f"  {line}" for line in d.lines]
    out += list(result.rollouts)
    out.append(_count(result))
    return "\n".join(out)


def _markdown(result: Plan) -> str:
    out = [f"### Fleet plan `{result.base}` → `{result.head}`", "", f"**{_count(result)}**", ""]
    out += [f"- {line}" for line in result.rollouts] + ([""] if result.rollouts else [])
    if result.problems:
        out += ["> :x: the head revision is invalid for some devices:", ""]
        out += [f"- `{p.format()}`" for p in result.problems] + [""]
    if result.devices:
        out += ["| device | status | changes |", "|---|---|---|"]
        for d in result.devices:
            cells = "<br>".join(f"`{line}`" for line in d.lines).replace("|", "\\|")
            out.append(f"| `{d.device}` | {d.status} | {cells} |")
    else:
        out.append("No device changes what it runs.")
    out += ["", "<details><summary>changed files</summary>", ""]
    out += [f"- `{p}`" for p in result.changed_paths] + ["", "</details>"]
    return "\n".join(out)


def _json(result: Plan) -> str:
    return json.dumps({
        "base": result.base, "head": result.head, "changedPaths": list(result.changed_paths),
        "devices": [{"device": d.device, "status": d.status, "changes": list(d.lines), "details": d.details}
                    for d in result.devices],
        "affected": len(result.devices),
        "rollouts": list(result.rollouts),
        "problems": [p.to_dict() for p in result.problems],
    }, indent=2, default=str)
