"""Benchmark the device agent on a 10,000-device fleet served by a local gitolite over ssh (and over file://).

The fleet is bench_fleet.py's generator (10,000 devices, 500 groups, 200 models) with every model pointing at
one tiny artifact published to a local registry, plus a device ``bench-dev`` whose group runs one model (a
sleeping python process under the process runtime).  For each transport a child process is the agent: it
builds one ``Reconciler`` and calls ``run_once()`` repeatedly, as the loop does, and measures

- no-op cycle: wall and CPU time, median of 20 (nothing changed on the server);
- unrelated-commit cycle: median of 5, each after an admin commit to another device's file;
- resident memory after 200 cycles (ru_maxrss, the peak, and VmRSS, the current size);
- a cProfile of 10 no-op cycles (ms per cycle in each step of the pass and in the costliest functions) and
  of 3 more unrelated-commit cycles (per step);
- for reference, what a pygit2 fetch with nothing new and a ``git ls-remote`` cost over ssh without us.

The agent runs in a child so that its memory figures are not the generator's.  Prints one JSON object.
Targets (issue 4): no-op < 150 ms, unrelated-commit < 300 ms, RSS < 80 MiB.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DEVICE = "bench-dev"
NOOP_CYCLES = 20
UNRELATED_COMMITS = 5
TOTAL_CYCLES = 200
PROFILED_CYCLES = 10
PROFILED_UNRELATED = 3
STEPS = ("fetch", "verify", "load", "pull", "observe_and_plan", "execute", "report")
GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "Bench Operator",
           "GIT_AUTHOR_EMAIL": "operator@example.com", "GIT_COMMITTER_NAME": "Bench Operator",
           "GIT_COMMITTER_EMAIL": "operator@example.com"}


# -- the fleet ---------------------------------------------------------------------------------------------
def fleet_files(registry_address: str, artifact: str) -> dict[str, str]:
    import bench_fleet

    out = bench_fleet.files(random.Random(7))
    host, port = registry_address.rsplit(":", 1)
    fleet = out["fleet.yaml"]
    out["fleet.yaml"] = fleet.replace("{host: registry.example.com, port: 5000, credentialsRef: reg}",
                                      f"{{host: {host}, port: {port}}}")
    assert out["fleet.yaml"] != fleet, "bench_fleet's registry line changed"
    digest = artifact.split("@", 1)[1]
    pattern = re.compile(r"repo/models/m\d+@sha256:[0-9a-f]{64}")
    for path in [p for p in out if p.startswith("models/")]:
        out[path] = pattern.sub(f"repo/models/tiny@{digest}", out[path])
    out["models/bench.yaml"] = (
        "apiVersion: fleet/v1\nkind: Model\nmetadata: {name: bench}\nspec:\n  versions:\n"
        f'    "1.0":\n      artifact: repo/models/tiny@{digest}\n'
        '      command: [python3, -c, "import time; time.sleep(1e6)"]\n')
    out["groups/bench.yaml"] = (
        "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: bench}\nspec:\n  priority: 1000\n"
        f"  members: [{DEVICE}]\n  models:\n    - {{name: bench, version: \"1.0\"}}\n"
        "  detectors:\n    - {detector_id: det-bench, model: bench, confidence_threshold: 0.8}\n")
    out[f"devices/{DEVICE}.yaml"] = (f"apiVersion: fleet/v1\nkind: Device\nmetadata:\n  name: {DEVICE}\n"
                                     "  labels: {site: bench-site, arch: amd64}\nspec: {}\n")
    return out


def seed_repo(path: Path, files: dict[str, str]) -> None:
    import pygit2
    from bench_fleet import write_tree

    repo = pygit2.init_repository(str(path), bare=True)
    sig = pygit2.Signature("Bench Operator", "operator@example.com")
    repo.create_commit("refs/heads/main", sig, sig, "fleet of 10,000 devices", write_tree(repo, files), [])
    repo.set_head("refs/heads/main")


def git(*args: str, cwd: Path | None = None, ssh: str = "") -> str:
    env = {**os.environ, **GIT_ENV}
    if ssh:
        env["GIT_SSH_COMMAND"] = ssh
    out = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def agent_config(path: Path, url: str, data_dir: Path, key: Path | None, known_hosts: Path | None) -> Path:
    import yaml

    repo: dict[str, str] = {"url": url}
    if key is not None and known_hosts is not None:
        repo.update(sshKey=str(key), knownHosts=str(known_hosts))
    doc = {"device": DEVICE, "repo": repo, "dataDir": str(data_dir), "interval": 60, "jitter": 0,
           "timeouts": {"git": 30}, "runtimeOptions": {"stopGrace": 2}}
    path.write_text(yaml.safe_dump(doc))
    return path


# -- the agent child ---------------------------------------------------------------------------------------
def measure(rec: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    cycle = rec.run_once()
    return time.perf_counter() - wall, time.process_time() - cpu, cycle


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def profile_summary(prof: cProfile.Profile, cycles: int) -> dict[str, Any]:
    stats = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    per = 1000.0 / cycles
    steps = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items():
        if file.endswith("reconciler/agent/reconcile.py") and func in STEPS:
            steps[func] = round(ct * per, 2)

    def where(key: tuple[str, int, str]) -> str:
        file, line, func = key
        rel = file.split("/reconciler/", 1)[-1] if "/reconciler/" in file else Path(file).name
        return f"{rel}:{line}({func})" if line else func

    by_total = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    ours = [(k, v) for k, v in raw.items() if "/reconciler/" in k[0] and "/site-packages/" not in k[0]]
    by_cum = sorted(ours, key=lambda kv: kv[1][3], reverse=True)[:15]
    return {
        "steps_ms_per_cycle": {s: steps.get(s, 0.0) for s in STEPS},
        "top_self_time_ms_per_cycle": [{"function": where(k), "ms": round(v[2] * per, 2),
                                        "calls_per_cycle": round(v[1] / cycles, 1)} for k, v in by_total],
        "ours_cumulative_ms_per_cycle": [{"function": where(k), "ms": round(v[3] * per, 2)} for k, v in by_cum],
    }


def child(config_path: Path, clone: Path, ssh: str) -> dict[str, Any]:
    from reconciler.agent import config as agentconfig
    from reconciler.agent.reconcile import Reconciler

    config = agentconfig.load(config_path)
    rec = Reconciler(config)
    cycles = 0
    first_wall, _, first = measure(rec)
    cycles += 1
    if not first.ready:
        raise SystemExit(f"first cycle not Ready: {first.error or first.blocked or first.failing}")
    for _ in range(3):  # warm the caches the way a running agent has them
        rec.run_once()
        cycles += 1
    status_ref = f"refs/heads/status/{DEVICE}"
    status_before = len(rec.mirror.commits_between(rec.mirror.repo.references[status_ref].target, []))

    noop_wall, noop_cpu = [], []
    for _ in range(NOOP_CYCLES):
        w, c, cycle = measure(rec)
        cycles += 1
        assert cycle.ready and not cycle.did_work, "a no-op cycle did work"
        noop_wall.append(w)
        noop_cpu.append(c)

    def unrelated_commit(i: int) -> tuple[float, float]:
        other = f"devices/dev-{17 + i}.yaml"
        path = clone / other
        path.write_text(path.read_text().replace("arch: amd64", f"arch: amd64\n    rev: r{i}"))
        git("commit", "-qam", f"{other}: new label", cwd=clone)
        git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=clone, ssh=ssh)
        head = git("rev-parse", "HEAD", cwd=clone)
        w, c, cycle = measure(rec)
        assert cycle.ready and not cycle.did_work and rec.state.observed_commit == head, "commit not seen"
        assert rec.state.applied_commit == head, "an unrelated commit was not recorded as applied"
        return w, c

    unrelated_wall, unrelated_cpu = [], []
    for i in range(UNRELATED_COMMITS):
        w, c = unrelated_commit(i)
        cycles += 1
        unrelated_wall.append(w)
        unrelated_cpu.append(c)
    prof_unrelated = cProfile.Profile()
    for i in range(UNRELATED_COMMITS, UNRELATED_COMMITS + PROFILED_UNRELATED):
        prof_unrelated.enable()
        unrelated_commit(i)
        prof_unrelated.disable()
        cycles += 1

    while cycles < TOTAL_CYCLES:
        rec.run_once()
        cycles += 1
    status_after = len(rec.mirror.commits_between(rec.mirror.repo.references[status_ref].target, []))
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_kib = vm_rss_kib()

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(PROFILED_CYCLES):
        rec.run_once()
    prof.disable()
    return {
        "first_cycle_s": round(first_wall, 2),
        "noop_cycle_wall_ms": ms(noop_wall),
        "noop_cycle_cpu_ms": ms(noop_cpu),
        "noop_cycle_wall_ms_min_max": [round(min(noop_wall) * 1000, 1), round(max(noop_wall) * 1000, 1)],
        "unrelated_commit_cycle_wall_ms": ms(unrelated_wall),
        "unrelated_commit_cycle_cpu_ms": ms(unrelated_cpu),
        "cycles": cycles,
        "status_commits_during_noop_cycles": status_after - status_before,
        "rss_after_cycles_mib": round(rss_kib / 1024, 1),
        "maxrss_after_cycles_mib": round(maxrss_kib / 1024, 1),
        "profile_noop": profile_summary(prof, PROFILED_CYCLES),
        "profile_unrelated_commit_steps_ms": profile_summary(prof_unrelated, PROFILED_UNRELATED)["steps_ms_per_cycle"],
    }


def run_child(config: Path, clone: Path, ssh: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", str(config), "--clone", str(clone), "--ssh", ssh]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    if out.returncode != 0:
        raise SystemExit(f"agent child failed ({out.returncode}):\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


# -- the ssh reference: what a fetch with nothing new costs, without us -------------------------------------
def ssh_reference(server: Any, work: Path) -> dict[str, float]:
    from reconciler.git.mirror import FleetMirror, GitAuth
    from tests.services.gitserver import GIT_USER

    auth = GitAuth(ssh_key=server.key(DEVICE), known_hosts=server.known_hosts, username=GIT_USER)
    mirror = FleetMirror(work / "reference.git", server.url(), auth=auth, timeout=30)
    mirror.fetch()
    fetch = []
    for _ in range(10):
        t = time.perf_counter()
        mirror.fetch()
        fetch.append(time.perf_counter() - t)
    ls_remote = []
    for _ in range(5):
        t = time.perf_counter()
        server.git(DEVICE, "ls-remote", server.url())
        ls_remote.append(time.perf_counter() - t)
    return {"pygit2_fetch_nothing_new_ms": ms(fetch), "git_cli_ls_remote_ms": ms(ls_remote)}


def main() -> None:
    from tests.agentlab import publish, stop_workloads
    from tests.services.gitserver import run_git_server
    from tests.services.registry import run_registry

    os.environ.update(GIT_ENV)
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        work = Path(tmp)
        data_ssh, data_file = work / "data-ssh", work / "data-file"
        with run_registry(work / "registry") as reg, run_git_server(work / "git", devices=(DEVICE,)) as server, \
                stop_workloads(data_ssh, data_file):
            artifact = publish(reg.address, work, "models/tiny", "1.0", b"tiny weights\n")
            files = fleet_files(reg.address, artifact)
            seed = work / "seed.git"
            seed_repo(seed, files)
            admin = server.ssh_command("admin")
            git("--git-dir", str(seed), "push", "-q", server.url(), "refs/heads/main:refs/heads/main", ssh=admin)
            ssh_clone = work / "admin-ssh"
            git("clone", "-q", server.url(), str(ssh_clone), ssh=admin)
            local = work / "fleet-local.git"
            git("clone", "-q", "--bare", str(seed), str(local))
            file_clone = work / "admin-file"
            git("clone", "-q", f"file://{local}", str(file_clone))

            reference = ssh_reference(server, work)
            ssh_cfg = agent_config(work / "agent-ssh.yaml", server.url(), data_ssh, server.key(DEVICE),
                                   server.known_hosts)
            ssh_result = run_child(ssh_cfg, ssh_clone, admin)
            file_cfg = agent_config(work / "agent-file.yaml", f"file://{local}", data_file, None, None)
            file_result = run_child(file_cfg, file_clone, "")
    print(json.dumps({
        "fleet": {"devices": 10_000 + 1, "files": len(files), "device": DEVICE},
        "ssh_gitolite": ssh_result,
        "file_url": file_result,
        "ssh_reference": reference,
        "targets": {"noop_cycle_ms": 150, "unrelated_commit_cycle_ms": 300, "rss_mib": 80},
    }, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--clone", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ssh", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.clone, args.ssh)))
    else:
        main()
