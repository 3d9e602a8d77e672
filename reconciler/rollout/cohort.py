"""A rollout's cohort at one fleet revision, and what each of its devices reported.

The cohort of the current step is every device of the rollout's group whose pin of the model comes from that
group at ``from`` (the rule ``resolve`` applies) and whose hash or canary step puts it in (fleet/rollouts.py).
Each device is then classified from the tip of its status branch:

- healthy: applied the commit that began the step it joined at, or a later one; runs ``to``; Ready;
- failed: rolled back from ``to``, or Degraded or Failed on it;
- unknown: anything else (not reported since the step began, offline, no status branch): never failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pygit2

from reconciler.fleet.resolve import Resolver
from reconciler.fleet.rollouts import Rollout
from reconciler.rollout.decide import Counts
from reconciler.rollout.history import StepStart
from reconciler.views import snapshot

HEALTHY, FAILED, UNKNOWN = "healthy", "failed", "unknown"


@dataclass(frozen=True)
class Member:
    device: str
    joined: int  # the first step whose cohort holds it
    verdict: str = UNKNOWN
    detail: str = ""


def members(resolver: Resolver, r: Rollout) -> list[Member]:
    """The devices in the current step's cohort, in name order."""
    return [Member(name, joined) for name, joined in resolver.cohort(r, resolver.view.device_names())]


class Classifier:
    """Reads status tips from ``status_repo`` and ancestry from ``fleet_repo`` (the same repo unless a
    separate status repository is used)."""

    def __init__(self, fleet_repo: pygit2.Repository, status_repo: pygit2.Repository,
                 tips: Mapping[str, pygit2.Oid], starts: Mapping[int, StepStart]) -> None:
        self.fleet_repo = fleet_repo
        self.status_repo = status_repo
        self.tips = tips
        self.starts = starts
        self._after: dict[tuple[str, pygit2.Oid], bool] = {}

    def classify(self, r: Rollout, m: Member) -> Member:
        tip = self.tips.get(m.device)
        if tip is None:
            return Member(m.device, m.joined, UNKNOWN, "no status branch")
        snap = snapshot.read(self.status_repo, self.status_repo[tip].peel(pygit2.Commit), m.device)
        model = snap.model(r.model)
        if model is None:
            return Member(m.device, m.joined, UNKNOWN, f"reports no {r.model}")
        on_to = r.to_version in (model.version, model.desired_version)
        if on_to and (model.state in ("rolledBack", "failed") or snap.phase in ("Degraded", "Failed")):
            why = model.last_error or snap.last_error() or model.state
            return Member(m.device, m.joined, FAILED, f"{model.label()}: {why}"[:300])
        start = self.starts.get(m.joined)
        if start is None or not self._applied_since(snap.applied_commit, start.commit):
            return Member(m.device, m.joined, UNKNOWN, "not reported since the step began")
        if model.version == r.to_version and model.state == "running" and snap.phase == "Ready":
            return Member(m.device, m.joined, HEALTHY, model.label())
        return Member(m.device, m.joined, UNKNOWN, f"{model.label()}, {snap.phase}")

    def _applied_since(self, applied: str | None, start: pygit2.Oid) -> bool:
        if applied is None:
            return False
        key = (applied, start)
        if key not in self._after:
            try:
                oid = pygit2.Oid(hex=applied)
                self._after[key] = oid == start or (oid in self.fleet_repo and
                                                    bool(self.fleet_repo.descendant_of(oid, start)))
            except (ValueError, pygit2.GitError):
                self._after[key] = False
        return self._after[key]


def count(members_: list[Member]) -> Counts:
    verdicts = [m.verdict for m in members_]
    return Counts(len(verdicts), verdicts.count(HEALTHY), verdicts.count(FAILED), verdicts.count(UNKNOWN))
