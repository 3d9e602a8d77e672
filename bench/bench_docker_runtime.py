"""Start -> healthy for the process and docker runtimes side by side, on this machine.

Prints one JSON object.  The workload is busybox ``httpd`` serving the model dir; healthy means
``GET /healthz`` answers 200 through the runtime's own ``check_health`` (for docker: through the port
published on 127.0.0.1).  For each runtime and each of ROUNDS rounds: ``start`` (docker: create + start
of a local image), ``check_health``, ``observe`` (docker: includes the one-shot stats call) and ``stop``,
each timed; the agent's own CPU time (user + system of this process) is reported beside the wall time, so
what Docker itself costs shows as wall time not spent in the agent.  A private dockerd is started in a temp
dir (tests/services/dockerd.py), so this needs root and Debian docker.io.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - cpu0


def _run(runtime: Any, workloads: list[Any], device: str) -> dict[str, Any]:
    phases: dict[str, list[tuple[float, float]]] = {"start": [], "healthy": [], "observe": [], "stop": []}
    for w in workloads:
        observed, wall, cpu = _timed(lambda w=w: runtime.start(w))
        phases["start"].append((wall, cpu))
        result, wall, cpu = _timed(lambda w=w, o=observed: runtime.check_health(w, o))
        if not result.healthy:
            raise SystemExit(f"{runtime.name}: not healthy: {result.message}")
        phases["healthy"].append((wall, cpu))
        _, wall, cpu = _timed(lambda: runtime.observe(device))
        phases["observe"].append((wall, cpu))
        _, wall, cpu = _timed(lambda o=observed: runtime.stop(o))
        phases["stop"].append((wall, cpu))
    out: dict[str, Any] = {}
    for name, samples in phases.items():
        out[name] = {
            "wall_s_median": round(statistics.median(s[0] for s in samples), 3),
            "agent_cpu_s_median": round(statistics.median(s[1] for s in samples), 3),
        }
    starts = [a[0] + b[0] for a, b in zip(phases["start"], phases["healthy"], strict=True)]
    out["start_to_healthy_s"] = {"median": round(statistics.median(starts), 3), "max": round(max(starts), 3)}
    return out


def main() -> None:
    from reconciler.model import HealthCheck, Workload
    from reconciler.runtimes.docker import DockerRuntime
    from reconciler.runtimes.process import ProcessRuntime
    from tests.services.dockerd import build_busybox_image, run_dockerd
    from tests.services.registry import free_port

    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        model_dir.mkdir()
        (model_dir / "healthz").write_text("ok\n")
        detectors = work / "detectors.yaml"
        detectors.write_text("detectors: []\n")
        report: dict[str, Any] = {"rounds": ROUNDS, "cpus": os.cpu_count()}

        proc_rt = ProcessRuntime(work / "proc-data", {"stopGrace": 2})
        proc_loads = []
        for i in range(ROUNDS):
            port = free_port()
            proc_loads.append(Workload(
                device="bench", model="m", version=f"p{i}", model_dir=str(model_dir),
                detectors_config=str(detectors), port=port,
                command=("busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "${MODEL_DIR}"),
                health=HealthCheck(path="/healthz", port=port, timeout=20)))
        report["process"] = _run(proc_rt, proc_loads, "bench")

        t0 = time.perf_counter()
        with run_dockerd(work / "dockerd") as daemon:
            report["dockerd_start_s"] = round(time.perf_counter() - t0, 3)
            build_busybox_image(daemon, work, "bench/busybox:1")
            docker_rt = DockerRuntime(work / "docker-data", {"dockerHost": daemon.host, "stopTimeout": 1})
            docker_loads = [
                Workload(device="bench", model="m", version=f"d{i}", model_dir=str(model_dir),
                         detectors_config=str(detectors), image="bench/busybox:1", port=8080,
                         command=("httpd", "-f", "-p", "8080", "-h", "/model"),
                         health=HealthCheck(path="/healthz", timeout=20))
                for i in range(ROUNDS)
            ]
            report["docker"] = _run(docker_rt, docker_loads, "bench")
        report["note"] = ("docker stop includes stopTimeout=1s: busybox httpd as PID 1 ignores SIGTERM; "
                          "docker observe includes a stats call that samples CPU over ~1s")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
