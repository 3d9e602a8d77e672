"""Prometheus metrics of the agent.

The loop records into plain counters (``Recorder``, no third-party import on the loop's path); a scrape turns
them and the last view into the text format with prometheus-client, imported on the first scrape only.

    reconciler_reconcile_duration_seconds{result}     histogram of pass durations, result = success | failure
    reconciler_last_success_timestamp_seconds         end of the last pass that left the device Ready
    reconciler_applied_info{commit}                   1, labelled with the applied fleet commit
    reconciler_model_up{model,version,digest}         1 while the model runs, 0 otherwise
    reconciler_model_restarts_total{model}            restarts by the runtime (supervisor or docker)
    reconciler_pull_bytes_total                       bytes downloaded from registries
    reconciler_status_queue_depth                     status commits not yet pushed
    reconciler_errors_total{reason}                   errors by reason (the status conditions' CamelCase)
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from reconciler.agent.cycle import Cycle
from reconciler.api.view import DeviceView

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last one is +Inf
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.durations: dict[str, _Histogram] = {}
        self.last_success: float | None = None
        self.pull_bytes = 0
        self.errors: dict[str, int] = {}
        self.generation = 0  # counts records: a scrape between two passes can reuse the last rendering

    def record(self, cycle: Cycle, seconds: float) -> None:
        reasons = [e.reason for e in {id(e): e for e in (cycle.error, cycle.fetch_error, cycle.blocked) if e}.values()]
        reasons += ["HealthCheckFailed"] * len(cycle.failing)
        if cycle.push_refused:
            reasons.append("PushRejected")
        with self._lock:
            self.durations.setdefault("success" if cycle.ready else "failure", _Histogram()).observe(seconds)
            if cycle.ready:
                self.last_success = time.time()
            self.pull_bytes += cycle.pulled_bytes
            for reason in reasons:
                self.errors[reason] = self.errors.get(reason, 0) + 1
            self.generation += 1

    def families(self, view: DeviceView | None) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            durations = {k: (h.cumulative(), h.total) for k, h in self.durations.items()}
            last_success, pull_bytes, errors = self.last_success, self.pull_bytes, dict(self.errors)
        hist = HistogramMetricFamily("reconciler_reconcile_duration_seconds", "Duration of reconcile passes.",
                                     labels=["result"])
        for result in ("success", "failure"):
            buckets, total = durations.get(result, (_Histogram().cumulative(), 0.0))
            hist.add_metric([result], buckets, total)
        yield hist
        last = GaugeMetricFamily("reconciler_last_success_timestamp_seconds",
                                 "Unix time at the end of the last pass that left the device Ready.")
        if last_success is not None:
            last.add_metric([], last_success)
        yield last
        yield CounterMetricFamily("reconciler_pull_bytes", "Bytes downloaded from OCI registries.", value=pull_bytes)
        err = CounterMetricFamily("reconciler_errors", "Errors seen by reconcile passes, by reason.",
                                  labels=["reason"])
        for reason, n in sorted(errors.items()):
            err.add_metric([reason], n)
        yield err
        status = view.status if view is not None else {}
        applied = GaugeMetricFamily("reconciler_applied_info", "The applied fleet commit (value 1).",
                                    labels=["commit"])
        if status.get("appliedCommit"):
            applied.add_metric([str(status["appliedCommit"])], 1)
        yield applied
        up = GaugeMetricFamily("reconciler_model_up", "1 while the model version runs, 0 otherwise.",
                               labels=["model", "version", "digest"])
        restarts = CounterMetricFamily("reconciler_model_restarts", "Restarts of the model's workload.",
                                       labels=["model"])
        for m in view.models if view is not None else ():
            up.add_metric([m["name"], m["version"], m.get("digest") or ""], 1 if m.get("state") == "running" else 0)
            restarts.add_metric([m["name"]], view.restarts.get(m["name"], 0) if view is not None else 0)
        yield up
        yield restarts
        queue = GaugeMetricFamily("reconciler_status_queue_depth", "Status commits waiting to be pushed.")
        queue.add_metric([], float((status.get("push") or {}).get("pending") or 0))
        yield queue


def exposition(recorder: Recorder, view: DeviceView | None) -> bytes:
    """The Prometheus text format (version 0.0.4) of everything above."""
    from prometheus_client import CollectorRegistry, generate_latest

    class _Collector:
        def collect(self) -> Iterator[Any]:
            return recorder.families(view)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return bytes(generate_latest(registry))
