"""Pull storms: a rollout's ``maxPullsPerMinute`` spreads the pulls of a new version over minutes.

``resolve`` gives each assignment its slot (fleet/rollouts.py ``Rollout.pull_delay``, from the device's hash);
before that slot the agent leaves the artifact unpulled and the running version running, and says so
(``Waiting: pull of ... at ...``).  The slot counts from when the step began (the rollout's ``status.since``),
else from when this device first saw the new version (kept in its state, so restarts do not reset it).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from reconciler.agent.cycle import Cycle
from reconciler.errors import Waiting
from reconciler.model import ModelAssignment, workload_from_dict


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def later(m: ModelAssignment, info: dict[str, Any], cycle: Cycle, now: float) -> bool:
    """True when ``m``'s pull waits for its slot; the cycle then keeps what runs and reports Waiting."""
    if m.pull_delay <= 0 or m.version in (info.get("digests") or {}):
        return False  # no spreading, or the artifact is in the store already
    seen = info.setdefault("firstSeen", {})
    key = f"{m.version}@{m.pull_origin or ''}"
    origin = _epoch(m.pull_origin) or float(seen.setdefault(key, now))
    due = origin + m.pull_delay
    if now >= due:
        return False
    running = info.get("workload")
    if running and running.get("version") != m.version:
        cycle.workloads[m.name] = workload_from_dict(running)  # the running version stays desired meanwhile
    else:
        cycle.workloads.pop(m.name, None)
    cycle.held.add(m.name)
    at = dt.datetime.fromtimestamp(due, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cycle.blocked = cycle.blocked or Waiting(f"Waiting: pull of {m.name} {m.version} at {at} (the rollout spreads "
                                             f"its pulls: maxPullsPerMinute)")
    return True
