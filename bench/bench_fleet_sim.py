"""Simulate a fleet: N devices, each the real ``Reconciler`` (own data dir, own ssh key, own status branch, real
pulls from a local registry) polling one gitolite+sshd on loopback, with the bench-only in-memory runtime below.

    python bench/bench_fleet_sim.py --devices 1000 --interval 30 --jitter 30 [--beacon] [--status-repo]

Timeline: every device deploys version 1.0 (its first cycles, spread over interval + jitter), then an idle
window of one interval + jitter (no-op polls: the server's CPU per poll and per device-hour), then one commit
that moves every device to 2.0 and the time until all N report it applied.  Then: status pushes refused or
lost (each device's local status tip must equal the server's), status repo growth, client CPU per cycle, git
fetches per device-hour.  Separately, one device's bytes per no-op poll through a counting TCP relay, with 0
and with 10,000 status branches (in the status repo, and for contrast in the fleet repo).

Server CPU is the listening sshd's own and its reaped children's (each connection's sshd, gitolite-shell,
git upload-pack / receive-pack), from /proc.  Devices run in ``--workers`` processes of ``--threads`` threads
(libgit2 releases the GIL in network calls).  On a shared 2-core machine the simulated devices compete with
the server for CPU: figures are upper bounds; say so.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import heapq
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Bench Operator",
           "GIT_AUTHOR_EMAIL": "operator@example.com", "GIT_COMMITTER_NAME": "Bench Operator",
           "GIT_COMMITTER_EMAIL": "operator@example.com"}
TICK = os.sysconf("SC_CLK_TCK")


# -- the bench-only runtime: never registered in the product ------------------------------------------------
class MemoryRuntime:
    """Satisfies ``reconciler.runtimes.base.Runtime`` with a dict: 1,000 devices cannot each run processes."""

    name = "process"
    parallel_ports = False

    def __init__(self) -> None:
        from reconciler.model import Observed

        self._observed = Observed
        self.running: dict[str, Any] = {}

    def observe(self, device: str, with_stats: bool = True) -> list[Any]:
        return list(self.running.values())

    def start(self, workload: Any) -> Any:
        o = self._observed(workload.model, workload.version, workload.spec_hash, f"mem-{workload.model}",
                           "running", time.time())
        self.running[f"{workload.model}@{workload.version}"] = o
        return o

    def check_health(self, workload: Any, observed: Any) -> Any:
        from reconciler.model import HealthResult

        return HealthResult(True, "in memory", 0.0)

    def stop(self, observed: Any) -> None:
        self.running.pop(f"{observed.model}@{observed.version}", None)

    def reload(self, observed: Any) -> None:
        pass

    def logs(self, observed: Any, lines: int = 20) -> str:
        return ""


# -- one worker process: a share of the devices, each cycled at its interval + jitter share ------------------
def worker(spec_path: Path) -> None:
    from reconciler.agent import config as agentconfig
    from reconciler.agent.loop import jitter_fraction
    from reconciler.agent.reconcile import Reconciler

    spec = json.loads(spec_path.read_text())
    configs = [Path(p) for p in spec["configs"]]
    interval, jitter, start, stop = spec["interval"], spec["jitter"], spec["start"], spec["stop"]
    out = open(spec["out"], "w", buffering=1)  # noqa: SIM115 (lives as long as the worker)
    lock = threading.Lock()
    recs: dict[int, Any] = {}

    def cycle(i: int) -> None:
        rec = recs.get(i)
        if rec is None:
            rec = recs[i] = Reconciler(agentconfig.load(configs[i]))
            rec._runtimes["process"] = MemoryRuntime()
        before = rec.poller.fetches
        wall, cpu = time.time(), time.thread_time()
        c = rec.run_once()
        line = {"d": rec.config.device, "t0": wall, "t": time.time(), "cpu": time.thread_time() - cpu,
                "applied": rec.state.applied_commit, "ready": c.ready, "fetched": rec.poller.fetches - before,
                "pushError": rec.state.push_error, "refused": c.push_refused,
                "version": (rec.state.models.get("sim") or {}).get("version")}
        with lock:
            out.write(json.dumps(line) + "\n")

    queue = [(start + jitter * jitter_fraction(agentconfig.load(p).device), i) for i, p in enumerate(configs)]
    heapq.heapify(queue)
    busy: set[int] = set()
    with ThreadPoolExecutor(spec["threads"]) as pool:
        while queue:
            due, i = heapq.heappop(queue)
            if due >= stop:
                continue
            time.sleep(max(0.0, due - time.time()))
            if i in busy:  # still in its previous cycle: a real agent would start the next one after it
                heapq.heappush(queue, (time.time() + 0.5, i))
                continue
            busy.add(i)

            def run(i: int = i) -> None:
                try:
                    cycle(i)
                except Exception:  # a bench bug must show, not vanish in the pool
                    traceback.print_exc()
                finally:
                    busy.discard(i)

            pool.submit(run)
            heapq.heappush(queue, (due + interval, i))
    final = {rec.config.device: str(rec.writer._local_tip()) for rec in recs.values()}
    out.write(json.dumps({"final": final}) + "\n")
    out.close()


# -- the parent -------------------------------------------------------------------------------------------
def git(*args: str, cwd: Path | None = None, ssh: str = "") -> str:
    env = {**os.environ, **GIT_ENV, **({"GIT_SSH_COMMAND": ssh} if ssh else {})}
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.strip()


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[k]) for k in (11, 12, 13, 14)) / TICK  # utime stime cutime cstime


def repo_size(bare: Path) -> tuple[int, int]:
    """(bytes of objects, status commits) in a bare repository (loose objects: what pushes add)."""
    size = sum(p.stat().st_size for p in (bare / "objects").rglob("*") if p.is_file())
    out = subprocess.run(["git", "--git-dir", str(bare), "rev-list", "--count", "--branches=status/*"],
                         capture_output=True, text=True, check=False).stdout.strip()
    return size, int(out or 0)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[k]) for k in (11, 12)) / TICK


def fleet_files(names: list[str], refs: dict[str, str], interval: int) -> dict[str, str]:
    versions = "".join(f'    "{v}":\n      artifact: {ref}\n      command: [sim]\n' for v, ref in refs.items())
    files = {
        "fleet.yaml": "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: sim}\nspec:\n  defaults: {runtime: process}\n"
                      f"  status: {{heartbeatInterval: 1h}}\n  agent: {{interval: {interval}}}\n",
        "models/sim.yaml": f"apiVersion: fleet/v1\nkind: Model\nmetadata: {{name: sim}}\nspec:\n  versions:\n{versions}",
        "groups/all.yaml": 'apiVersion: fleet/v1\nkind: Group\nmetadata: {name: all}\nspec:\n  models: [{name: sim, version: "1.0"}]\n',
    }
    for name in names:
        files[f"devices/{name}.yaml"] = f"apiVersion: fleet/v1\nkind: Device\nmetadata: {{name: {name}}}\nspec: {{}}\n"
    return files


def seed(clone: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = clone / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git("add", "-A", cwd=clone)
    git("commit", "-qm", f"fleet of {len(files) - 3} devices", cwd=clone)


class Relay:
    """A TCP relay on loopback that counts the bytes each connection carries (both ways)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            client, _ = self.sock.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target))
            counter = [0]
            self.connections.append(0)
            slot = len(self.connections) - 1

            def pipe(a: socket.socket, b: socket.socket, counter: list[int] = counter, slot: int = slot) -> None:
                try:
                    while data := a.recv(65536):
                        counter[0] += len(data)
                        self.connections[slot] = counter[0]
                        b.sendall(data)
                except OSError:
                    pass
                finally:
                    for s in (a, b):
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)

            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()


def poll_bytes(server: Any, work: Path, device: str, status_url: str | None) -> dict[str, Any]:
    """Bytes of one no-op fetch of the fleet repo, with 0 and with 10,000 status branches."""
    from reconciler.git.mirror import FleetMirror, GitAuth
    from tests.services.gitserver import GIT_USER

    relay = Relay(server.port)
    known = work / "known_hosts_relay"
    known.write_text(server.known_hosts.read_text().replace(f"[127.0.0.1]:{server.port}",
                                                            f"[127.0.0.1]:{relay.port}"))
    auth = GitAuth(ssh_key=server.key(device), known_hosts=known, username=GIT_USER)

    def measure(tag: str) -> int:
        mirror = FleetMirror(work / f"poll-{tag}.git", f"ssh://{GIT_USER}@127.0.0.1:{relay.port}/fleet", auth=auth)
        mirror.fetch()
        sizes = []
        for _ in range(5):
            n = len(relay.connections)
            mirror.fetch()
            time.sleep(0.05)
            sizes.append(relay.connections[n])
        return int(statistics.median(sizes))

    def add_status_branches(repo: str, count: int) -> None:
        bare = server.gitolite_home / "repositories" / f"{repo}.git"
        tip = subprocess.run(["git", "--git-dir", str(bare), "for-each-ref", "--count=1", "--format=%(objectname)"],
                             capture_output=True, text=True, check=True).stdout.strip()
        lines = "".join(f"create refs/heads/status/fake-{i:05d} {tip}\n" for i in range(count))
        subprocess.run(["git", "--git-dir", str(bare), "update-ref", "--stdin"], input=lines, text=True, check=True)

    def drop_status_branches(repo: str, count: int) -> None:
        bare = server.gitolite_home / "repositories" / f"{repo}.git"
        lines = "".join(f"delete refs/heads/status/fake-{i:05d}\n" for i in range(count))
        subprocess.run(["git", "--git-dir", str(bare), "update-ref", "--stdin"], input=lines, text=True, check=True)

    result: dict[str, Any] = {"zero": measure("zero")}
    if status_url is not None:
        add_status_branches("fleet-status", 10_000)
        result["status_repo_10000"] = measure("sep")
        drop_status_branches("fleet-status", 10_000)
    add_status_branches("fleet", 10_000)
    result["fleet_repo_10000"] = measure("in")
    drop_status_branches("fleet", 10_000)
    result["ratio_status_repo"] = round(result.get("status_repo_10000", 0) / result["zero"], 3)
    result["ratio_fleet_repo"] = round(result["fleet_repo_10000"] / result["zero"], 3)
    return result


def main(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from reconciler.beacon.publish import publish
    from tests.agentlab import publish as publish_artifact
    from tests.services.gitserver import GIT_USER, run_git_server
    from tests.services.registry import run_registry
    from tests.services.webserver import run_httpd

    os.environ.update(GIT_ENV)
    n = args.devices
    names = [f"sim-{i:05d}" for i in range(n)]
    window = args.interval + args.jitter
    with tempfile.TemporaryDirectory(prefix="bench-fleet-sim-") as tmp:
        work = Path(tmp)
        status_name = "fleet-status" if args.status_repo else None
        setup = time.time()
        with run_registry(work / "registry") as reg, \
                run_git_server(work / "git", devices=(*names, "probe"), status_repo=status_name) as server, \
                run_httpd(work / "www") as web:
            refs = {v: publish_artifact(reg.address, work, "models/sim", v, f"sim {v}\n".encode()) for v in ("1.0", "2.0")}
            admin = server.ssh_command("admin")
            clone = work / "admin"
            git("clone", "-q", server.url(), str(clone), ssh=admin)
            git("checkout", "-q", "-b", "main", cwd=clone)
            seed(clone, fleet_files([*names, "probe"], refs, args.interval))
            git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone, ssh=admin)
            bare = server.gitolite_home / "repositories" / "fleet.git"
            beacon_file = web.root / "fleet.beacon"

            def write_beacon() -> None:
                head = git("--git-dir", str(bare), "rev-parse", "refs/heads/main")
                publish({"refs/heads/main": head}, str(beacon_file))

            if args.beacon:
                write_beacon()
            configs = []
            for name in names:
                repo: dict[str, Any] = {"url": server.url(), "sshKey": str(server.key(name)),
                                        "knownHosts": str(server.known_hosts), "username": GIT_USER}
                if args.beacon:
                    repo["beacon"] = {"url": web.url("fleet.beacon"), "fullFetchEvery": args.full_fetch_every}
                doc: dict[str, Any] = {"device": name, "repo": repo, "dataDir": str(work / "data" / name),
                                       "interval": args.interval, "jitter": args.jitter, "timeouts": {"git": 60}}
                if status_name:
                    doc["statusRepo"] = {"url": server.url(status_name)}
                path = work / "configs" / f"{name}.yaml"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml.safe_dump(doc))
                configs.append(str(path))
            setup_s = time.time() - setup

            start = time.time() + 3
            idle_from, idle_to = start + window + 10, start + 2 * window + 10
            commit_at = idle_to + 1
            stop = commit_at + window + args.settle
            procs = []
            for w in range(args.workers):
                spec = {"configs": configs[w::args.workers], "interval": args.interval, "jitter": args.jitter,
                        "start": start, "stop": stop, "threads": args.threads, "out": str(work / f"worker-{w}.jsonl")}
                spec_path = work / f"worker-{w}.json"
                spec_path.write_text(json.dumps(spec))
                procs.append(subprocess.Popen([sys.executable, __file__, "--worker", str(spec_path)],
                                              env={**os.environ, **GIT_ENV}))
                atexit.register(procs[-1].terminate)  # a failing bench leaves no simulated device behind
            pid = server.sshd_pid
            assert pid is not None
            status_repo_dir = server.gitolite_home / "repositories" / f"{status_name or 'fleet'}.git"
            time.sleep(max(0.0, idle_from - time.time()))
            cpu0, web0 = server_cpu(pid), process_cpu(web.proc.pid) if web.proc else 0.0
            size0, commits0 = repo_size(status_repo_dir)
            time.sleep(max(0.0, idle_to - time.time()))
            cpu1, web1 = server_cpu(pid), process_cpu(web.proc.pid) if web.proc else 0.0
            time.sleep(max(0.0, commit_at - time.time()))
            (clone / "groups/all.yaml").write_text((clone / "groups/all.yaml").read_text().replace('"1.0"', '"2.0"'))
            git("commit", "-qam", "all devices to 2.0", cwd=clone)
            git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone, ssh=admin)
            committed = time.time()
            new = git("rev-parse", "HEAD", cwd=clone)
            if args.beacon:
                write_beacon()  # what hooks/post-receive does on a plain git server
            for p in procs:
                p.wait()
            size1, commits1 = repo_size(status_repo_dir)
            server_tips = {}
            for line in git("--git-dir", str(status_repo_dir), "for-each-ref", "--format=%(refname) %(objectname)",
                            "refs/heads/status/").splitlines():
                ref, oid = line.split()
                server_tips[ref.removeprefix("refs/heads/status/")] = oid
            if os.environ.get("BENCH_KEEP"):
                for w in range(args.workers):
                    (Path(os.environ["BENCH_KEEP"]) / f"worker-{w}.jsonl").write_bytes(
                        (work / f"worker-{w}.jsonl").read_bytes())
            lines, final = [], {}
            for w in range(args.workers):
                for raw in (work / f"worker-{w}.jsonl").read_text().splitlines():
                    item = json.loads(raw)
                    if "final" in item:
                        final.update(item["final"])
                    else:
                        lines.append(item)
            probe = poll_bytes(server, work, "probe", server.url(status_name) if status_name else None)
    applied_at: dict[str, float] = {}
    for item in lines:
        if item["applied"] == new and item["version"] == "2.0" and not item["pushError"] and item["d"] not in applied_at:
            applied_at[item["d"]] = item["t"]
    idle = [x for x in lines if idle_from <= x["t0"] and x["t"] <= idle_to]
    lost = [d for d in names if final.get(d) != server_tips.get(d)]
    run_seconds = stop - start
    polls_idle = len(idle)
    server_idle = (cpu1 - cpu0) + (web1 - web0)
    converge = max(applied_at.values()) - committed if len(applied_at) == n else None
    fetches = sum(x["fetched"] for x in lines)
    cpu = sorted(x["cpu"] for x in lines)
    return {
        "devices": n, "interval_s": args.interval, "jitter_s": args.jitter, "beacon": args.beacon,
        "full_fetch_every": args.full_fetch_every if args.beacon else None,
        "status": "own repo" if args.status_repo else "fleet repo", "workers": args.workers, "threads": args.threads,
        "setup_s": round(setup_s, 1),
        "converged_devices": len(applied_at),
        "converge_s_after_commit": None if converge is None else round(converge, 1),
        "converge_target_s": 75,
        "idle_window_s": round(idle_to - idle_from, 1), "idle_polls": polls_idle,
        "server_cpu_s_idle_window": round(server_idle, 2),
        "server_cpu_ms_per_poll": round(server_idle / polls_idle * 1000, 1) if polls_idle else None,
        "server_cpu_s_per_device_hour": round(server_idle / n / (idle_to - idle_from) * 3600, 2),
        "git_fetches_per_device_hour": round(fetches / n / run_seconds * 3600, 1),
        "cycles_per_device_hour": round(len(lines) / n / run_seconds * 3600, 1),
        "status_pushes_refused": sum(1 for x in lines if x["refused"]),
        "status_lost_devices": len(lost),
        "status_commits_after_deploy": commits1 - commits0,
        "status_bytes_per_commit": round((size1 - size0) / max(1, commits1 - commits0)),
        # a device that changes nothing commits a heartbeat an hour: 24 a day, plus one per change it makes
        "status_repo_kib_per_device_per_day_heartbeats_only": round(24 * (size1 - size0) / max(1, commits1 - commits0)
                                                                    / 1024, 1),
        "cycle_wall_s_median": round(statistics.median(x["t"] - x["t0"] for x in lines), 2) if lines else None,
        "cycle_wall_s_max": round(max(x["t"] - x["t0"] for x in lines), 2) if lines else None,
        "client_cpu_ms_per_cycle_median": round(statistics.median(cpu) * 1000, 1) if cpu else None,
        "client_cpu_ms_per_cycle_p90": round(cpu[int(len(cpu) * 0.9)] * 1000, 1) if cpu else None,
        "bytes_per_noop_poll": probe,
        "note": "one shared 2-core machine runs the server, the registry and every simulated device",
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--jitter", type=int, default=30)
    parser.add_argument("--beacon", action="store_true", help="devices poll a beacon on busybox httpd")
    parser.add_argument("--full-fetch-every", type=int, default=10)
    parser.add_argument("--status-repo", action="store_true", help="status branches in a repo of their own")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--settle", type=int, default=20, help="seconds after the convergence window")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.worker:
        worker(parsed.worker)
    else:
        print(json.dumps(main(parsed), indent=2))
