"""When each step of a rollout began: read from the fleet branch's history, so the controller keeps no state.

Walking first parents back from the tip, the rollout's current run is the run of commits in which its file
exists and its phase is active; the start of step k is the oldest commit of the most recent stretch in which
the file says step k.  A device has reported on step k once it applied that commit or a later one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import pygit2

from reconciler.fleet.document import parse
from reconciler.fleet.rollouts import ACTIVE

MAX_WALK = 100_000  # commits; a rollout older than this counts from the oldest one read


@dataclass(frozen=True)
class StepStart:
    commit: pygit2.Oid
    time: int  # committer time, seconds since the epoch


def _state(repo: pygit2.Repository, tree: pygit2.Tree, path: str,
           memo: dict[pygit2.Oid, tuple[int, str] | None]) -> tuple[int, str] | None:
    """(step, phase) of the rollout file in ``tree``; None when absent or unreadable."""
    try:
        entry = tree[path]
    except KeyError:
        return None
    if entry.id not in memo:
        doc, _ = parse(path, cast(pygit2.Blob, repo[entry.id]).data)
        status = (doc.data.get("status") if doc is not None and isinstance(doc.data, dict) else None) or {}
        step, phase = status.get("step", 0), status.get("phase", "Progressing")
        memo[entry.id] = (step, phase) if isinstance(step, int) and isinstance(phase, str) else None
    return memo[entry.id]


def step_starts(repo: pygit2.Repository, tip: pygit2.Oid, path: str) -> dict[int, StepStart]:
    """Step index -> the commit that began it, for the rollout at ``path`` (relative to the repo root)."""
    starts: dict[int, StepStart] = {}
    done: set[int] = set()
    memo: dict[pygit2.Oid, tuple[int, str] | None] = {}
    previous: int | None = None
    commit: pygit2.Commit | None = repo[tip].peel(pygit2.Commit)
    for _ in range(MAX_WALK):
        if commit is None:
            break
        state = _state(repo, commit.tree, path, memo)
        if state is None or state[1] not in ACTIVE:
            break
        step = state[0]
        if previous is not None and step != previous:
            done.add(previous)
        if step not in done:
            starts[step] = StepStart(commit.id, commit.commit_time)
        previous = step
        commit = commit.parents[0] if commit.parents else None
    return starts
