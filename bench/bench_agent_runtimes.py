"""Commit on main -> new workload healthy, through ``reconciler agent --once``, process vs docker runtime.

For one device, per runtime: a bare fleet repository, a registry holding the model artifacts (and, for
docker, an image per version pinned by digest), and an initial deploy.  Then ROUNDS times: commit a version
change (1.0 <-> 2.0) to main and run the agent as a child process (``python -m reconciler agent --once``),
which fetches, pulls the artifact, replaces the workload and returns once the new one passed its health check
(``GET /healthz``) and its status is pushed.  Measured per round:

- ``commit_to_healthy_s``: wall time from before ``git commit`` until the new version answers ``GET /version``
  (polled every 20 ms from outside the agent, through the host port: fixed for process, the published one
  for docker);
- ``commit_to_status_s``: the same until the agent exits, status pushed (0 = Ready, checked);
- ``agent_wall_s`` and ``agent_cpu_s``: the agent child's wall time and its own CPU time (user + system from
  ``os.wait4``), which includes starting Python and importing the package (``startup_cpu_s`` is that alone);
- ``start_s``: the agent's own measure of start -> healthy (status ``performance.startSeconds``);
- ``docker_cpu_s``: CPU time the Docker daemon side (dockerd, containerd, shims, proxies: its process session)
  spent in the same interval, so that the agent's overhead shows beside what Docker itself costs.

Also a no-op cycle (nothing changed) per runtime.  The workload is the same on both runtimes: busybox
``httpd`` (Debian busybox-static) serving ``/healthz`` and ``/version``; docker publishes container port 8080
on a random 127.0.0.1 port, the process runtime listens on a fixed port.  Prints one JSON object.
Needs root, Debian docker.io, docker-registry and busybox-static (a private dockerd is started in a temp dir).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Bench Operator",
           "GIT_AUTHOR_EMAIL": "operator@example.com", "GIT_COMMITTER_NAME": "Bench Operator",
           "GIT_COMMITTER_EMAIL": "operator@example.com"}
HTTPD = ("d=$(mktemp -d) && echo $MODEL_VERSION > $d/version && echo ok > $d/healthz && "
         "exec busybox httpd -f -p {listen} -h $d")


def _session_cpu(sid: int) -> float:
    """CPU seconds (user + system) of the live processes of session ``sid`` (dockerd started one)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the ")": state ppid pgrp session ... utime(12) stime(13) cutime(14) cstime(15)
        if int(fields[3]) == sid:
            total += sum(int(x) for x in fields[11:15])
    return total / tick


def _child(args: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """Run a child; returns (exit code, wall seconds, CPU seconds of the child from wait4)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    code = proc.returncode
    if code not in (0, 1):
        raise SystemExit(f"{args}: exit {code}: {err.decode(errors='replace')[-2000:]}")
    return code, wall, usage.ru_utime + usage.ru_stime


def _med(values: list[float]) -> float:
    return round(statistics.median(values), 3)


class Device:
    """One device's fleet repository and agent, under one runtime."""

    def __init__(self, root: Path, runtime: str, refs: dict[str, str], images: dict[str, str],
                 docker_host: str | None, docker_sid: int | None) -> None:
        from tests.agentlab import Lab, free_port

        self.runtime, self.images, self.docker_sid, self.docker_host = runtime, images, docker_sid, docker_host
        self.lab = Lab(root, "", refs, port=free_port())
        self.env = {**os.environ, **GIT_ENV}
        os.environ.update(GIT_ENV)
        self.lab.setup()
        extra: dict[str, Any] = {"runtimeOptions": {"stopTimeout": 0, "stopGrace": 2}}
        if docker_host:
            extra["dockerHost"] = docker_host
        self.config = self.lab.config_path(**extra)
        self.commit("1.0", "bench setup")

    def model_yaml(self) -> str:
        import yaml

        versions: dict[str, Any] = {}
        for v, ref in self.lab.refs.items():
            if self.runtime == "docker":
                entry = {"image": self.images[v], "port": 8080,
                         "command": ["sh", "-c", HTTPD.replace("busybox ", "").format(listen="8080")]}
            else:
                entry = {"port": self.lab.port,
                         "command": ["sh", "-c", HTTPD.format(listen=f"127.0.0.1:{self.lab.port}")]}
            entry.update(artifact=ref, health={"path": "/healthz", "timeout": 20})
            versions[v] = entry
        return str(yaml.safe_dump({"apiVersion": "fleet/v1", "kind": "Model", "metadata": {"name": "counter"},
                                   "spec": {"versions": versions}}))

    def commit(self, version: str, message: str) -> None:
        fleet = ("apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: bench}\nspec:\n"
                 f"  defaults: {{runtime: {self.runtime}}}\n  status: {{heartbeatInterval: 1h}}\n")
        self.lab.commit({"fleet.yaml": fleet, "models/counter.yaml": self.model_yaml(),
                         "groups/all.yaml": self.lab.group_yaml(version)}, message)

    def cycle(self) -> dict[str, float]:
        docker0 = _session_cpu(self.docker_sid) if self.docker_sid else 0.0
        code, wall, cpu = _child([sys.executable, "-m", "reconciler", "agent", "--config", str(self.config),
                                  "--once", "--log-level", "WARNING"], self.env)
        docker_cpu = (_session_cpu(self.docker_sid) - docker0) if self.docker_sid else 0.0
        if code != 0:
            raise SystemExit(f"{self.runtime}: agent cycle failed: {self.lab.status().get('conditions')}")
        return {"agent_wall_s": wall, "agent_cpu_s": cpu, "docker_cpu_s": docker_cpu}

    def serves(self, version: str, ports: list[int]) -> bool:
        """Does the device answer with ``version`` now, where a client would find it?  ``ports`` caches the
        docker host ports found, so that the poll lists containers (dockerd CPU) only until one appears."""
        if self.runtime == "process":
            ports = [self.lab.port]
        elif not ports:
            import docker

            client = docker.DockerClient(base_url=self.docker_host, version="1.41", timeout=10)
            with contextlib.closing(client):
                found = client.containers.list(filters={"label": f"io.edge-reconciler.version={version}"})
                ports += [int(b[0]["HostPort"]) for c in found
                          for b in [(c.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp")] if b]
        for port in ports:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1) as r:
                if r.read().decode().strip() == version:
                    return True
        return False

    def deploy(self, version: str) -> dict[str, float]:
        healthy: list[float] = []
        done = threading.Event()

        def poll() -> None:
            ports: list[int] = []
            while not done.is_set():
                if self.serves(version, ports):
                    healthy.append(time.perf_counter())
                    return
                time.sleep(0.02 if ports else 0.1)

        poller = threading.Thread(target=poll)
        t0 = time.perf_counter()
        self.commit(version, f"to {version}")
        poller.start()
        out = self.cycle()
        out["commit_to_status_s"] = time.perf_counter() - t0
        poller.join(timeout=10)
        done.set()
        if not healthy:
            raise SystemExit(f"{self.runtime}: {version} never answered")
        out["commit_to_healthy_s"] = healthy[0] - t0
        models = self.lab.status()["models"]
        assert isinstance(models, list)
        model = models[0]
        if model["version"] != version or model["state"] != "running":
            raise SystemExit(f"{self.runtime}: expected {version} running, status says {model}")
        out["start_s"] = float(model["performance"]["startSeconds"])
        return out


def measure(device: Device) -> dict[str, Any]:
    device.cycle()  # the first deploy: clone, pull, start
    rounds = [device.deploy("2.0" if i % 2 == 0 else "1.0") for i in range(ROUNDS)]
    noop = [device.cycle() for _ in range(3)]
    out: dict[str, Any] = {}
    for key in ("commit_to_healthy_s", "commit_to_status_s", "agent_wall_s", "agent_cpu_s", "start_s", "docker_cpu_s"):
        if device.runtime == "process" and key == "docker_cpu_s":
            continue
        out[key] = {"median": _med([r[key] for r in rounds]), "max": round(max(r[key] for r in rounds), 3)}
    out["noop_cycle"] = {k: _med([n[k] for n in noop]) for k in noop[0] if device.runtime == "docker"
                         or k != "docker_cpu_s"}
    if device.runtime == "docker":
        # what one observe costs the pass (it runs once per cycle, twice when something changed)
        from reconciler.runtimes.docker import DockerRuntime

        rt = DockerRuntime(device.lab.data_dir, {"dockerHost": device.docker_host})
        timed = {}
        for stats in (True, False):
            samples = []
            for _ in range(3):
                t0 = time.perf_counter()
                rt.observe(device.lab.device, with_stats=stats)
                samples.append(time.perf_counter() - t0)
            timed["with_stats" if stats else "without_stats"] = _med(samples)
        out["observe_s"] = timed
    return out


def main() -> None:
    from tests.agentlab import publish
    from tests.services.dockerd import build_busybox_image, push_image, run_dockerd
    from tests.services.registry import run_registry

    report: dict[str, Any] = {"rounds": ROUNDS, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-agent-rt-") as tmp:
        work = Path(tmp)
        with run_registry(work / "registry") as reg, run_dockerd(work / "dockerd") as daemon:
            refs = {v: publish(reg.address, work, "models/counter", v, f"weights {v}\n".encode() * 1000)
                    for v in ("1.0", "2.0")}
            images = {}
            for v in refs:
                build_busybox_image(daemon, work, f"bench/counter:{v}", [f"ENV IMAGE_VERSION={v}"])
                images[v] = push_image(daemon, f"bench/counter:{v}", f"{reg.address}/images/counter:{v}")
            env = {**os.environ, **GIT_ENV}
            startup = [_child([sys.executable, "-c", "import reconciler.agent.reconcile, reconciler.runtimes.docker, "
                               "reconciler.artifacts.store, docker, pygit2, oras"], env)[2] for _ in range(3)]
            report["startup_cpu_s"] = _med(startup)
            for runtime in ("process", "docker"):
                device = Device(work / runtime, runtime, refs, images,
                                daemon.host if runtime == "docker" else None,
                                os.getsid(daemon.pid) if runtime == "docker" else None)
                try:
                    report[runtime] = measure(device)
                finally:
                    stop_all(device, daemon.host)
    report["note"] = ("agent_* are the `agent --once` child (wait4 rusage), Python start and imports included "
                      "(startup_cpu_s); start_s is start -> healthy inside the agent; docker_cpu_s is the CPU of "
                      "dockerd's session (dockerd, containerd, shims, docker-proxy) over the same cycle")
    print(json.dumps(report))


def stop_all(device: Device, docker_host: str) -> None:
    from reconciler.runtimes import get_runtime

    options: dict[str, Any] = {"stopGrace": 2, "stopTimeout": 0, "dockerHost": docker_host}
    rt = get_runtime(device.runtime, device.lab.data_dir, options)
    for o in rt.observe(device.lab.device):
        rt.stop(o)


if __name__ == "__main__":
    main()
