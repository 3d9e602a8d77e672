"""Carrying out a pass's plan against the runtimes: start, health-check, roll back, stop, adopt.

The pass (``reconcile.py``) decides what to do; this module does it and records in the agent state what
came of it (version, digest, since, last error, performance) for the status report.  It is separate so the
pass reads as its steps, and so the start/check/rollback rules live in one place of their own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.agent import detectors as detectors_file
from reconciler.agent.cycle import Cycle
from reconciler.agent.plan import Action
from reconciler.agent.state import AgentState
from reconciler.errors import ReconcilerError, Stalled
from reconciler.model import DesiredState, ModelAssignment, Workload, workload_from_dict, workload_to_dict
from reconciler.runtimes.base import Runtime

if TYPE_CHECKING:
    from reconciler.artifacts.store import ArtifactStore

# the pass's logger: moving the code here changes no log line
log = logging.getLogger("reconciler.agent")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(info: dict[str, Any], w: Workload) -> str | None:
    """The digest status reports: the artifact's manifest, else (an image-only model) the pinned image's."""
    pulled: str | None = (info.get("digests") or {}).get(w.version)
    return pulled or (w.image.partition("@")[2] or None if w.image else None)


class Executor:
    """Applies a cycle's actions with the device's runtimes and keeps ``state.models`` up to date."""

    def __init__(self, state: AgentState, device: str, data_dir: Path, runtime: Callable[[str], Runtime],
                 store: Callable[[], ArtifactStore], mask: Callable[[str], str]) -> None:
        self.state = state
        self.device = device
        self.data_dir = data_dir
        self._runtime = runtime
        self._store_for = store
        self._mask = mask

    def execute(self, cycle: Cycle) -> None:
        assert cycle.desired is not None
        runtime = self._runtime(str(cycle.desired.config.get("runtime", "process")))
        versions = {m.name: m.version for m in cycle.desired.models}
        detectors_file.write(self.data_dir, cycle.desired.detectors, versions)
        self.state.detectors = detectors_file.per_model_hash(cycle.desired.detectors)
        for action in cycle.actions:
            self._execute(runtime, action, cycle)
        # what runs now, for status (memory, state); measured again only when something changed or a
        # heartbeat is due, since a no-op cycle must stay cheap (docker stats cost a second)
        heartbeat = cycle.desired.settings.get("heartbeatInterval", 3600.0)
        due = time.time() - self.state.last_status_commit >= heartbeat
        now_running = runtime.observe(self.device) if cycle.did_work or due else cycle.observed
        observed = {o.model: o for o in now_running if o.spec_hash in {w.spec_hash for w in cycle.workloads.values()}}
        for name, w in cycle.workloads.items():
            info = self.state.models.setdefault(name, {})
            o = observed.get(name)
            perf = info.setdefault("performance", {})
            if o is not None and o.state == "running" and info.get("specHash") == w.spec_hash:
                if info.get("state") in ("rolledBack", "failed"):
                    # what runs is desired again (a rollout aborted, a pin reverted): the failure is history
                    info.update({"state": "running", "lastError": None, "since": now_iso()})
                if o.memory_bytes is not None:
                    perf["memoryBytes"] = o.memory_bytes
                if o.cpu_percent is not None:
                    perf["cpuPercent"] = round(o.cpu_percent, 2)
            info["desiredVersion"] = w.version
            info["address"] = w.address
            info["warnings"] = runtime.unsupported(w)
            assignment = cycle.desired.model(name)
            info["group"] = assignment.group if assignment else ""
            if name not in cycle.failing and name not in cycle.held and (o is None or o.state != "running"):
                cycle.failing[name] = f"not running ({o.state if o else 'missing'})"
        for name in [m for m in self.state.models if m not in cycle.workloads]:
            self.state.models.pop(name)
        if cycle.blocked is None and not cycle.failing:
            self.state.applied_commit = str(cycle.target)
            self.state.applied_key = cycle.key
            if cycle.did_work:
                self._gc(cycle.desired)

    # -- actions -------------------------------------------------------------------------------------------
    def _execute(self, runtime: Runtime, action: Action, cycle: Cycle) -> None:
        model = action.model
        log.info("%s %s: %s", action.kind, model, action.reason)
        if action.kind == "stop":
            for o in action.old:
                runtime.stop(o)
            cycle.did_work = True
            return
        w = action.workload
        assert w is not None
        info = self.state.models.setdefault(model, {})
        if action.kind == "hold":
            failure = self.state.failed.get(w.spec_hash, {})
            cycle.failing[model] = f"version {w.version} failed its health check: {failure.get('message', '')}"
            return
        if action.kind == "reload":
            runtime.reload(action.old[0])
            return
        cycle.did_work = True
        if action.kind == "repair":
            cycle.drift.append(f"{model} {w.version}: {action.reason}; restarted")
        # A fixed port cannot be held by two versions at once: stop the old first, and start it again
        # if the new one fails.  Without a fixed port, or on a runtime that gives each workload its own host
        # port (docker), the new one starts beside the old (no gap, and a failed one leaves the old untouched).
        stop_first = action.kind in ("repair", "restart") or (
            action.kind == "replace" and w.port is not None and not runtime.parallel_ports)
        previous = info.get("workload")
        if stop_first:
            for o in action.old:
                runtime.stop(o)
        started = time.monotonic()
        healthy, message = self._start_and_check(runtime, w)
        if healthy:
            if not stop_first:
                for o in action.old:
                    runtime.stop(o)
            digest = _digest(info, w)
            if info.get("specHash") != w.spec_hash or info.get("state") != "running":
                info["since"] = now_iso()
            info.update({"version": w.version, "specHash": w.spec_hash, "state": "running", "lastError": None,
                         "digest": digest, "workload": workload_to_dict(w)})
            perf = info.setdefault("performance", {})
            perf["startSeconds"] = round(time.monotonic() - started, 3)
            perf["pullSeconds"] = (info.get("pulls") or {}).get(w.version, perf.get("pullSeconds"))
            return
        # roll back: the old version keeps (or goes back to) running
        message = self._mask(message)
        self.state.failed[w.spec_hash] = {"model": model, "version": w.version, "message": message[:2000],
                                          "key": cycle.key, "since": now_iso()}
        rolled_back = False
        if stop_first and previous and action.kind == "replace":
            old = workload_from_dict(previous)
            ok, _ = self._start_and_check(runtime, old)
            rolled_back = ok
        elif action.old:
            rolled_back = True
        info["lastError"] = f"version {w.version}: {message}"[:2000]
        info["since"] = now_iso()
        info["state"] = "rolledBack" if rolled_back else "failed"
        if not rolled_back:
            info["version"] = w.version
        cycle.failing[model] = (f"version {w.version} failed its health check"
                                f"{'; rolled back to ' + str(info.get('version')) if rolled_back else ''}: {message}")

    def pull_failed(self, m: ModelAssignment, exc: ReconcilerError, cycle: Cycle) -> None:
        """A version that could not be pulled is listed in status: desired version, lastError, and state failed
        when nothing of the model runs (a version that runs keeps running and keeps its state)."""
        info = self.state.models.setdefault(m.name, {})
        message = self._mask(str(exc)).splitlines()[0][:2000]
        if info.get("state") != "running":
            info.update({"version": m.version, "state": "failed", "since": now_iso(), "digest": None})
        info.update({"desiredVersion": m.version, "group": m.group,
                     "lastError": f"version {m.version}: pull failed: {message}"})
        cycle.failing[m.name] = f"version {m.version}: pull failed: {message}"

    def adopt(self, runtime: Runtime, cycle: Cycle) -> None:
        """A running workload of the desired spec that this agent never saw healthy (it was killed during the
        health check, or lost its state) must pass the check now, before it counts as the running version and
        before the version it replaces is stopped.  One that fails is removed: the plan then replaces it
        again, with rollback."""
        for o in list(cycle.observed):
            w = cycle.workloads.get(o.model)
            info = self.state.models.setdefault(o.model, {})
            if w is None or o.spec_hash != w.spec_hash or o.state != "running" or o.drifted or (
                    info.get("specHash") == w.spec_hash):
                continue
            cycle.did_work = True
            if runtime.check_health(w, o).healthy:
                log.info("adopted %s %s (%s)", o.model, o.version, o.handle[:12])
                info.update({"version": w.version, "specHash": w.spec_hash, "state": "running", "lastError": None,
                             "digest": _digest(info, w), "since": now_iso(),
                             "workload": workload_to_dict(w)})
            else:
                runtime.stop(o)
                cycle.observed.remove(o)

    def _start_and_check(self, runtime: Runtime, w: Workload) -> tuple[bool, str]:
        try:
            observed = runtime.start(w)
            result = runtime.check_health(w, observed)
        except Stalled as exc:
            return False, str(exc)
        if result.healthy:
            return True, ""
        tail = ""
        with contextlib.suppress(ReconcilerError, OSError):
            tail = runtime.logs(observed, 10)
        with contextlib.suppress(ReconcilerError):
            runtime.stop(observed)
        detail = f"{result.message}" + (f"; last output: {tail.strip()[-800:]}" if tail.strip() else "")
        return False, detail

    def _gc(self, desired: DesiredState) -> None:
        with contextlib.suppress(ReconcilerError, OSError):
            self._store_for().gc([(m.name, m.version) for m in desired.models if m.artifact], keep_previous=1)
