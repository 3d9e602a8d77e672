"""The API's answers and its metrics, without sockets: the routes on a view built from a real status document,
/metrics read back with prometheus-client's own text parser."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.agent.cycle import Cycle
from reconciler.agent.liveness import Liveness
from reconciler.api.metrics import Recorder
from reconciler.api.routes import App
from reconciler.api.view import build_view
from reconciler.errors import DeadlineExceeded, InvalidConfig
from reconciler.model import DesiredState, Detector, Observed
from reconciler.status import document as status_doc
from tests.api.promtext import samples

DIGEST = "sha256:" + "c" * 64
COMMIT = "ab" * 20


def status(phase: str = "Ready") -> dict[str, Any]:
    models = {"counter": {"version": "1.0", "digest": DIGEST, "state": "running", "since": "2026-01-01T00:00:00Z",
                          "workload": {"port": 8123}, "signatures": {"1.0": "release@acme"}},
              "broken": {"version": "2.0", "state": "failed", "lastError": "version 2.0: exited 1"}}
    desired = DesiredState(device="edge1", labels={}, groups=("all",), models=(),
                           detectors=(Detector("det_a", "counter", "all", confidence_threshold=0.75),), config={})
    ready = "True" if phase == "Ready" else "False"
    doc = status_doc.build(device="edge1", runtime="process", observed=COMMIT, applied=COMMIT, phase=phase,
                           conditions=[{"type": "Ready", "status": ready, "reason": "ReconciliationSucceeded",
                                        "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                           models=models, desired=desired, drift=[], now="2026-01-01T00:00:01Z", pending=2,
                           push_error=None)
    return {"doc": doc, "models": models, "desired": desired}


def app_with_view(phase: str = "Ready") -> tuple[App, list[int]]:
    woken: list[int] = []
    app = App("edge1", Liveness(60), Recorder(), wake=lambda: woken.append(1))
    s = status(phase)
    observed = [Observed("counter", "1.0", "h", "123", "running", restarts=3)]
    app.publish(build_view("edge1", s["doc"], s["models"], s["desired"], observed, "process"))
    return app, woken


def body(app: App, path: str, method: str = "GET", local: bool = True) -> tuple[int, Any]:
    r = app.answer(method, path, local)
    return r.status, json.loads(r.body) if r.content_type == "application/json" else r.body.decode()


def test_models_answer_like_wallaroo_edge_get_models() -> None:
    app, _ = app_with_view()
    code, doc = body(app, "/v1/models")
    assert code == 200
    counter = next(m for m in doc["models"] if m["name"] == "counter")
    assert counter == {"name": "counter", "version": "1.0", "digest": DIGEST, "state": "running",
                       "since": "2026-01-01T00:00:00Z", "address": "127.0.0.1:8123", "signer": "release@acme",
                       "lastError": None}
    broken = next(m for m in doc["models"] if m["name"] == "broken")
    assert broken["state"] == "failed" and broken["address"] is None and "exited 1" in broken["lastError"]


def test_models_of_a_docker_device_answer_on_their_published_address() -> None:
    app = App("edge1", Liveness(60), Recorder(), wake=lambda: None)
    s = status()
    s["models"]["counter"]["address"] = "0.0.0.0:8123"
    s["models"]["counter"]["workload"] = {"port": 8123}
    app.publish(build_view("edge1", s["doc"], s["models"], s["desired"], [], "docker"))
    code, doc = body(app, "/v1/models")
    counter = next(m for m in doc["models"] if m["name"] == "counter")
    assert code == 200 and counter["address"] == "0.0.0.0:8123"
    del s["models"]["counter"]["address"]  # a docker model with no recorded address: none, not a guess
    app.publish(build_view("edge1", s["doc"], s["models"], s["desired"], [], "docker"))
    counter = next(m for m in body(app, "/v1/models")[1]["models"] if m["name"] == "counter")
    assert counter["address"] is None


def test_status_is_the_status_document_and_detectors_carry_their_settings() -> None:
    app, _ = app_with_view()
    assert body(app, "/v1/status") == (200, json.loads(json.dumps(status()["doc"])))
    code, doc = body(app, "/v1/detectors")
    assert code == 200
    assert doc["detectors"] == [{"detector_id": "det_a", "model": "counter", "group": "all",
                                 "confidence_threshold": 0.75, "always_return_edge_prediction": False,
                                 "disable_cloud_escalation": False, "min_time_between_escalations": 2.0,
                                 "local_inference_template": "default", "version": "1.0", "state": "active"}]


def test_readyz_follows_the_phase_and_healthz_the_loop() -> None:
    app, _ = app_with_view("Ready")
    assert body(app, "/readyz")[0] == 200
    app, _ = app_with_view("Degraded")
    code, doc = body(app, "/readyz")
    assert code == 503 and doc["phase"] == "Degraded"
    clock = [0.0]
    app.liveness = Liveness(10, clock=lambda: clock[0])
    assert body(app, "/healthz") == (200, {"alive": True, "passes": 0, "passRunningSeconds": None})
    app.liveness.begin()
    clock[0] = 11.0
    code, doc = body(app, "/healthz")
    assert code == 503 and doc["alive"] is False and doc["passRunningSeconds"] == 11.0


def test_before_the_first_pass() -> None:
    app = App("edge1", Liveness(60), Recorder(), wake=lambda: None)
    for path in ("/readyz", "/v1/status", "/v1/models", "/v1/detectors"):
        code, doc = body(app, path)
        assert code == 503 and doc["message"] == "the first pass is under way"
    assert body(app, "/healthz")[0] == 200
    assert body(app, "/metrics")[0] == 200


def test_one_write_endpoint_on_the_unix_socket_only() -> None:
    app, woken = app_with_view()
    code, doc = body(app, "/v1/reconcile", "POST", local=True)
    assert code == 202 and doc["accepted"] is True and woken == [1]
    assert body(app, "/v1/reconcile", "POST", local=False)[0] == 403
    assert body(app, "/v1/reconcile", "GET")[0] == 405
    assert woken == [1]
    for method in ("POST", "PUT", "DELETE"):
        assert body(app, "/v1/status", method)[0] == 405
    assert body(app, "/nope")[0] == 404


def test_metrics_parse_with_prometheus_client() -> None:
    app, _ = app_with_view()
    ok = Cycle(pulled_bytes=1000)
    app.recorder.record(ok, 0.2)
    failed = Cycle(pulled_bytes=24, fetch_error=DeadlineExceeded("slow"))
    failed.error = InvalidConfig("bad")
    failed.failing = {"broken": "health"}
    app.recorder.record(failed, 3.0)
    app.recorder.record(Cycle(), 0.004)
    code, text = body(app, "/metrics")
    assert code == 200 and app.answer("GET", "/metrics", True).content_type.startswith("text/plain; version=0.0.4")
    got = samples(text)
    assert ({"result": "success"}, 2.0) in got["reconciler_reconcile_duration_seconds_count"]
    assert ({"result": "failure"}, 1.0) in got["reconciler_reconcile_duration_seconds_count"]
    buckets = {(lab["result"], lab["le"]): v for lab, v in got["reconciler_reconcile_duration_seconds_bucket"]}
    assert buckets[("success", "0.005")] == 1 and buckets[("success", "0.25")] == 2
    assert buckets[("failure", "2.5")] == 0 and buckets[("failure", "5.0")] == 1
    assert got["reconciler_reconcile_duration_seconds_sum"][1][1] == pytest.approx(3.0)
    assert got["reconciler_last_success_timestamp_seconds"][0][1] > 1.7e9
    assert got["reconciler_applied_info"] == [({"commit": COMMIT}, 1.0)]
    assert sorted(got["reconciler_model_up"], key=lambda s: s[0]["model"]) == [
        ({"model": "broken", "version": "2.0", "digest": ""}, 0.0),
        ({"model": "counter", "version": "1.0", "digest": DIGEST}, 1.0)]
    assert ({"model": "counter"}, 3.0) in got["reconciler_model_restarts_total"]
    assert got["reconciler_pull_bytes_total"] == [({}, 1024.0)]
    assert got["reconciler_status_queue_depth"] == [({}, 2.0)]
    assert sorted(got["reconciler_errors_total"], key=lambda s: s[0]["reason"]) == [
        ({"reason": "DeadlineExceeded"}, 1.0), ({"reason": "HealthCheckFailed"}, 1.0),
        ({"reason": "ValidationFailed"}, 1.0)]
