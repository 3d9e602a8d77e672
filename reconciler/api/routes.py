"""What each endpoint answers: a pure function of the request and the App's published state."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reconciler.agent.liveness import Liveness
from reconciler.api import metrics
from reconciler.api.view import DeviceView

JSON = "application/json"


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON


def _json(status: int, doc: Any) -> Response:
    return Response(status, (json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n").encode())


class App:
    """The API's side of the agent: the last view, liveness, the metrics recorder and a way to wake the loop."""

    def __init__(self, device: str, liveness: Liveness, recorder: metrics.Recorder,
                 wake: Callable[[], None], mask: Callable[[str], str] = lambda s: s) -> None:
        self.device = device
        self.liveness = liveness
        self.recorder = recorder
        self.wake = wake
        self.mask = mask
        self.view: DeviceView | None = None  # swapped whole by the loop's thread after each pass
        # answers that change only when a pass ends, rendered once per pass however often they are asked for
        self._rendered: dict[str, tuple[DeviceView | None, int, Response]] = {}

    def publish(self, view: DeviceView) -> None:
        self.view = view

    def answer(self, method: str, path: str, local: bool) -> Response:
        """``local``: the request came over the unix socket (the only place a write is allowed)."""
        path = path.split("?", 1)[0]
        if path == "/v1/reconcile":
            if method != "POST":
                return _json(405, {"error": "POST /v1/reconcile runs a pass now"})
            if not local:
                return _json(403, {"error": "POST /v1/reconcile is accepted on the unix socket only"})
            busy = self.liveness.busy_for() is not None
            self.wake()
            return _json(202, {"accepted": True, "message": "a pass is under way; another follows it" if busy
                               else "a pass starts now"})
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{method} is not allowed on {path}: the API is read-only"})
        view = self.view
        if path in ("/metrics", "/v1/status", "/v1/models", "/v1/detectors"):
            generation = self.recorder.generation
            cached = self._rendered.get(path)
            if cached is not None and cached[0] is view and cached[1] == generation:
                return cached[2]
            response = self._render(path, view)
            self._rendered[path] = (view, generation, response)
            return response
        if path == "/healthz":
            running = self.liveness.busy_for()
            alive = self.liveness.alive()
            return _json(200 if alive else 503, {"alive": alive, "passes": self.liveness.passes,
                                                 "passRunningSeconds": None if running is None else round(running, 3)})
        if path != "/readyz":
            return _json(404, {"error": f"no endpoint {path}"})
        if view is None:
            return self._first_pass()
        ready = view.ready
        conditions = {c["type"]: c for c in view.status.get("conditions") or []}
        ready_c = conditions.get("Ready", {})
        return _json(200 if ready else 503, {"device": view.device, "ready": ready,
                                             "phase": view.status.get("phase"), "reason": ready_c.get("reason"),
                                             "message": self.mask(str(ready_c.get("message", "")))})

    def _first_pass(self) -> Response:
        return _json(503, {"device": self.device, "ready": False, "message": "the first pass is under way"})

    def _render(self, path: str, view: DeviceView | None) -> Response:
        if path == "/metrics":
            return Response(200, metrics.exposition(self.recorder, view), metrics.CONTENT_TYPE)
        if view is None:
            return self._first_pass()
        if path == "/v1/status":
            return _json(200, view.status)
        if path == "/v1/models":
            return _json(200, {"models": list(view.models)})
        return _json(200, {"detectors": list(view.detectors)})
