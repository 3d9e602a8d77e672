"""The one summarizer: what a cycle found -> phase and conditions.  Pure; steps only report facts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import ReconcilerError, Stalled, Transient, Waiting


@dataclass(frozen=True)
class Facts:
    error: ReconcilerError | None = None  # what stopped the pass (or kept the new state from applying)
    fetch_error: ReconcilerError | None = None  # offline: the cycle went on with what it had
    push_error: str | None = None  # the previous status push: refused (push_refused) or offline
    push_refused: bool = False
    failing: Mapping[str, str] = field(default_factory=dict)  # model -> why it does not run as desired
    target: str | None = None
    applied: str | None = None
    verified: tuple[str, str, str] | None = None  # the Verified condition (status, reason, message), with trust


def summarize(facts: Facts, previous: Mapping[str, Mapping[str, str]], now: str
              ) -> tuple[str, list[dict[str, str]]]:
    err = facts.error
    short = (facts.applied or "nothing")[:12]
    if isinstance(err, Stalled):
        phase = "Failed"
        ready = ("False", err.reason, _one_line(err, f"keeps running {short}"))
    elif isinstance(err, Transient | Waiting):
        phase = "Progressing"
        ready = ("False", err.reason, _one_line(err, "will retry"))
    elif err is not None:
        phase = "Failed"
        ready = ("False", "ReconcileFailed", _one_line(err, ""))
    elif facts.failing:
        phase = "Degraded"
        ready = ("False", "HealthCheckFailed", _failing(facts))
    else:
        phase = "Ready"
        ready = ("True", "ReconciliationSucceeded", "every desired model runs and is healthy")
    wanted: dict[str, tuple[str, str, str]] = {
        "Ready": ready,
        "Stalled": ("True", err.reason, _one_line(err, "")) if isinstance(err, Stalled)
        else ("False", "NotStalled", ""),
        "Reconciling": ("True", err.reason, "retrying with backoff") if isinstance(err, Transient | Waiting)
        else ("False", "Idle", ""),
        # which desired models do not run as desired, whatever stopped the pass; AllHealthy only when none
        "Degraded": ("True", "HealthCheckFailed" if err is None else "ModelsNotRunning", _failing(facts))
        if facts.failing else ("False", "AllHealthy", ""),
    }
    if facts.fetch_error is not None:
        wanted["Connected"] = ("False", facts.fetch_error.reason, _one_line(facts.fetch_error, "working offline"))
    else:
        wanted["Connected"] = ("True", "FetchSucceeded", "")
    if facts.verified is not None:
        wanted["Verified"] = facts.verified
    if facts.push_refused:
        wanted["StatusReported"] = ("False", "PushRejected", facts.push_error or "")
    elif facts.push_error:
        wanted["StatusReported"] = ("Unknown", "Offline", "status commits queued on the device")
    else:
        wanted["StatusReported"] = ("True", "Pushed", "")
    conditions = []
    for ctype, (status, reason, message) in wanted.items():
        prev = previous.get(ctype) or {}
        since = prev.get("lastTransitionTime", now) if prev.get("status") == status else now
        conditions.append({"type": ctype, "status": status, "reason": reason, "message": message,
                           "lastTransitionTime": since})
    return phase, conditions


def _failing(facts: Facts) -> str:
    return "; ".join(f"{m}: {why}" for m, why in sorted(facts.failing.items()))


def _one_line(err: BaseException, suffix: str) -> str:
    text = str(err).strip()
    if len(text) > 2000:
        text = text[:2000] + " ..."
    return f"{text} ({suffix})" if suffix else text


def as_mapping(conditions: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {c["type"]: {k: str(v) for k, v in c.items() if k != "type"} for c in conditions}
