"""The controller's decision for one rollout: a pure, total function of the rollout, the cohort's counts
and the time.

Order: too many failures first (abort when ``onFailure: revert``, else pause), then the bake time, then
``minReporting``; when all hold the rollout advances, and after its last step completes.  A Paused rollout
waits for a person (who sets ``phase: Progressing`` again, or ``Aborted``).  Offline devices are unknown,
never failed: they can hold a rollout at ``minReporting`` but never abort it.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.fleet.rollouts import Rollout


@dataclass(frozen=True)
class Counts:
    cohort: int
    healthy: int
    failed: int
    unknown: int

    def to_dict(self) -> dict[str, int]:
        return {"cohort": self.cohort, "healthy": self.healthy, "failed": self.failed, "unknown": self.unknown}

    def text(self) -> str:
        return f"cohort {self.cohort}: {self.healthy} healthy, {self.failed} failed, {self.unknown} unknown"


@dataclass(frozen=True)
class Decision:
    kind: str  # advance | complete | abort | pause | wait
    message: str
    step: int  # the step after the decision
    phase: str  # the phase after the decision

    @property
    def commits(self) -> bool:
        return self.kind != "wait"


def decide(r: Rollout, counts: Counts, now: float, started: float) -> Decision:
    """``started``: when the current step began (seconds since the epoch)."""
    where = r.where()
    if r.phase == "Paused":
        return Decision("wait", f"{where} is paused: waiting for a person ({counts.text()})", r.step, r.phase)
    allowed = r.allowed_failures(counts.cohort)
    if counts.failed > allowed:
        why = f"{counts.failed} failed > maxFailed {allowed}"
        if r.on_failure == "pause":
            return Decision("pause", f"pause at {where}: {why} ({counts.text()})", r.step, "Paused")
        return Decision("abort", f"abort at {where}: {why}; every device runs {r.from_version} again "
                                 f"({counts.text()})", r.step, "Aborted")
    bake = r.steps[r.step].bake
    if now - started < bake:
        left = int(bake - (now - started))
        return Decision("wait", f"{where} bakes {left}s more ({counts.text()})", r.step, r.phase)
    reporting = 100.0 if counts.cohort == 0 else counts.healthy * 100.0 / counts.cohort
    if reporting < r.min_reporting:
        return Decision("wait", f"{where} waits: {reporting:.0f}% healthy on {r.to_version} < minReporting "
                                f"{r.min_reporting:g}% ({counts.text()})", r.step, r.phase)
    if r.step + 1 < len(r.steps):
        nxt = r.steps[r.step + 1].describe()
        return Decision("advance", f"advance to step {r.step + 2}/{len(r.steps)} ({nxt}) after {where} "
                                   f"({counts.text()})", r.step + 1, "Progressing")
    return Decision("complete", f"complete: group {r.group} pins {r.model} {r.to_version} after {where} "
                                f"({counts.text()})", r.step, "Complete")
