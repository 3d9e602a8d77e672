"""The API of a real agent process: a real registry, a real model workload, curl on the unix socket,
prometheus-client's parser on /metrics, the status document checked against its schema."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
import yaml

from reconciler.main import main
from reconciler.status import document as status_doc
from tests.agentlab import Lab, free_port, publish, stop_workloads
from tests.api.promtext import samples
from tests.fleetutil import ROOT, git
from tests.services.registry import run_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        yield reg.address, {"1.0": publish(reg.address, work, "models/counter", "1.0", b"weights 1.0" * 1000)}


@pytest.fixture
def agent(tmp_path: Path, artifacts: tuple[str, dict[str, str]]) -> Iterator[tuple[Lab, subprocess.Popen[bytes], int]]:
    address, refs = artifacts
    lab = Lab(tmp_path, address, refs)
    lab.setup()
    api_port = free_port()
    # a long interval: after the first pass only POST /v1/reconcile starts another
    config = lab.config_path(interval=300, api={"listen": ["agent.sock", f"127.0.0.1:{api_port}"]})
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "agent.log", "wb"))  # noqa: SIM115
    with stop_workloads(lab.data_dir):
        try:
            yield lab, proc, api_port
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def curl(sock: Path, path: str, *extra: str) -> tuple[int, str]:
    res = subprocess.run(["curl", "-sS", "--max-time", "10", "--unix-socket", str(sock), "-w", "\n%{http_code}",
                          *extra, f"http://localhost{path}"], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    body, _, code = res.stdout.rpartition("\n")
    return int(code), body


def wait_ready(sock: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists() and curl(sock, "/readyz")[0] == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"agent not ready: {(sock.parent / 'agent.log').read_text()[-2000:]}")


def test_the_local_api_of_a_running_agent(agent: tuple[Lab, subprocess.Popen[bytes], int],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    lab, proc, api_port = agent
    sock = lab.root / "agent.sock"
    wait_ready(sock)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o660
    head = git(lab.server, "rev-parse", "main")

    code, body = curl(sock, "/v1/models")
    assert code == 200
    (model,) = json.loads(body)["models"]
    assert model["name"] == "counter" and model["version"] == "1.0" and model["state"] == "running"
    assert model["digest"].startswith("sha256:") and model["address"] == f"127.0.0.1:{lab.port}"
    assert set(model) == {"name", "version", "digest", "state", "since", "address", "signer", "lastError"}
    assert lab.get("/healthz")[0] == 200  # the address answers: it is where the model serves

    code, body = curl(sock, "/v1/status")
    live = json.loads(body)
    schema = json.loads((ROOT / "schemas/status.schema.json").read_text())
    jsonschema.validate(live, schema)
    committed = lab.status()
    assert live["appliedCommit"] == head == committed["appliedCommit"]
    assert status_doc.significant(yaml.safe_dump(live)) == status_doc.significant(yaml.safe_dump(committed))

    code, body = curl(sock, "/v1/detectors")
    assert code == 200 and [d["detector_id"] for d in json.loads(body)["detectors"]] == ["det_a00000000000000000000000000"]

    code, body = curl(sock, "/metrics")
    got = samples(body)
    assert got["reconciler_model_up"] == [({"model": "counter", "version": "1.0", "digest": model["digest"]}, 1.0)]
    assert got["reconciler_applied_info"] == [({"commit": head}, 1.0)]
    assert got["reconciler_pull_bytes_total"][0][1] > 10_000
    counts = dict((lab_["result"], v) for lab_, v in got["reconciler_reconcile_duration_seconds_count"])
    assert counts["success"] >= 1 and counts["failure"] == 0
    assert got["reconciler_status_queue_depth"] == [({}, 0.0)]
    assert got["reconciler_last_success_timestamp_seconds"][0][1] > time.time() - 120

    # the one write: a pass now, on the unix socket only
    passes = json.loads(curl(sock, "/healthz")[1])["passes"]
    code, body = curl(sock, "/v1/reconcile", "-X", "POST")
    assert code == 202 and json.loads(body)["accepted"] is True
    deadline = time.monotonic() + 30
    while json.loads(curl(sock, "/healthz")[1])["passes"] == passes:
        assert time.monotonic() < deadline, "POST /v1/reconcile did not run a pass"
        time.sleep(0.1)

    # loopback TCP: the same read-only answers, no write
    with socket.create_connection(("127.0.0.1", api_port), 5) as s:
        s.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 200") and b'"counter"' in answer
    res = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          f"http://127.0.0.1:{api_port}/v1/reconcile"], capture_output=True, text=True, timeout=20)
    assert res.stdout == "403"

    # the page for a person at the device
    assert main(["device-status", "--socket", str(sock)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dev1: Ready (ReconciliationSucceeded)")
    assert f"applied {head[:12]}" in out and "loop alive" in out
    row = next(line for line in out.splitlines() if line.startswith("counter"))
    assert row.split()[:4] == ["counter", "1.0", "running", f"127.0.0.1:{lab.port}"]
    assert any(line.startswith("det_a") for line in out.splitlines())
    config = lab.root / "agent-dev1.yaml"
    assert main(["device-status", "--config", str(config), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["name"] == "counter"

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) in (0, 1)
    assert not sock.exists()  # removed at a clean stop
    assert main(["device-status", "--socket", str(sock)]) == 1
    assert "no agent API socket" in capsys.readouterr().err
