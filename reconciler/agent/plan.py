"""Pure planning: desired workloads x what the runtime reports -> ordered actions.  No I/O here."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from reconciler.model import Observed, Workload


@dataclass(frozen=True)
class Action:
    kind: str  # stop | start | replace | repair | reload | restart | hold
    model: str
    workload: Workload | None = None
    old: tuple[Observed, ...] = ()
    reason: str = ""


def plan(desired: Mapping[str, Workload], observed: Sequence[Observed], *,
         detectors_changed: Collection[str] = (), failed: Collection[str] = ()) -> list[Action]:
    """Stops of what is no longer wanted come first (they free ports and memory), then per desired model the
    one action that brings it to its desired workload.  ``failed`` holds spec hashes that already failed their
    health check for this desired state: they are held, not retried, until the desired state changes."""
    actions: list[Action] = []
    by_model: dict[str, list[Observed]] = {}
    for o in observed:
        by_model.setdefault(o.model, []).append(o)
    for model in sorted(set(by_model) - set(desired)):
        actions.append(Action("stop", model, old=tuple(by_model[model]), reason="no longer desired"))
    for model in sorted(desired):
        w = desired[model]
        mine = by_model.get(model, [])
        match = [o for o in mine if o.spec_hash == w.spec_hash]
        others = tuple(o for o in mine if o.spec_hash != w.spec_hash)
        healthy = [o for o in match if o.state == "running" and not o.drifted]
        if w.spec_hash in failed and not healthy:
            actions.append(Action("hold", model, w, others, reason="failed its health check; kept the previous"))
            continue
        if healthy:
            extra = tuple(o for o in match if o is not healthy[0]) + others
            if extra:
                actions.append(Action("stop", model, old=extra, reason="left over from an earlier version"))
            if model in detectors_changed:
                kind = "reload" if w.reload == "signal" else "restart"
                actions.append(Action(kind, model, w, (healthy[0],), reason="detectors changed"))
        elif match:
            why = "changed by hand" if any(o.drifted for o in match) else f"found {match[0].state}"
            actions.append(Action("repair", model, w, tuple(match) + others, reason=why))
        elif others:
            versions = ", ".join(sorted({o.version for o in others}))
            actions.append(Action("replace", model, w, others, reason=f"{versions} -> {w.version}"))
        else:
            actions.append(Action("start", model, w, reason="not running"))
    return actions
