"""Benchmark the fleet format on a synthetic fleet: 10,000 devices, 500 groups, 200 models in a git repo.

Prints JSON: render of one device (in-process and as a command), validate of the whole repo, and plan between
two commits that change one group.  Targets on a 2-core machine: render < 100 ms, validate < 10 s, plan < 5 s.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import os

from reconciler.fleet.change import plan
from reconciler.fleet.resolve import render_device
from reconciler.fleet.source import GitSource
from reconciler.fleet.validate import validate
from reconciler.fleet.view import FleetView

DEVICES, GROUPS, MODELS = (int(x) for x in os.environ.get("BENCH_FLEET_SIZE", "10000,500,200").split(","))
SITES = [f"site-{i}" for i in range(100)]


def digest(seed: str) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def files(rng: random.Random) -> dict[str, str]:
    out = {"fleet.yaml": """apiVersion: fleet/v1
kind: Fleet
metadata: {name: bench}
spec:
  registries:
    repo: {host: registry.example.com, port: 5000, credentialsRef: reg}
  defaults: {runtime: process, registry: repo, storage: {driver: filesystem, filesystem: {path: /var/lib/x}}}
"""}
    for m in range(MODELS):
        versions = "\n".join(
            f'    "{v}.0":\n      artifact: repo/models/m{m}@{digest(f"m{m}v{v}")}\n      command: [run, model]\n'
            f"      resources: {{cpus: 0.5, memory: 256m}}" for v in range(1, 4))
        out[f"models/m{m}.yaml"] = f"apiVersion: fleet/v1\nkind: Model\nmetadata: {{name: m{m}}}\nspec:\n  versions:\n{versions}\n"
    for g in range(GROUPS):
        models = rng.sample(range(MODELS), 2)
        pins = "\n".join(f'    - {{name: m{m}, version: "{rng.randint(1, 3)}.0"}}' for m in models)
        if g % 5 == 0:
            membership = f"  selector: {{matchLabels: {{site: site-{g // 5}}}}}"
        else:
            members = ", ".join(f"dev-{d}" for d in rng.sample(range(DEVICES), 20))
            membership = f"  members: [{members}]"
        det = f"  detectors:\n    - {{detector_id: det-g{g}, model: m{models[0]}, confidence_threshold: 0.8}}"
        out[f"groups/g{g}.yaml"] = (f"apiVersion: fleet/v1\nkind: Group\nmetadata: {{name: g{g}}}\nspec:\n"
                                    f"  priority: {g}\n{membership}\n  models:\n{pins}\n{det}\n")
    for d in range(DEVICES):
        out[f"devices/dev-{d}.yaml"] = (f"apiVersion: fleet/v1\nkind: Device\nmetadata:\n  name: dev-{d}\n  labels:\n"
                                        f"    site: {SITES[d % len(SITES)]}\n    arch: amd64\nspec: {{}}\n")
    return out


def write_tree(repo: pygit2.Repository, tree_files: dict[str, str]) -> pygit2.Oid:
    dirs: dict[str, dict[str, str]] = {}
    for path, text in tree_files.items():
        d, _, name = path.rpartition("/")
        dirs.setdefault(d, {})[name] = text
    root = repo.TreeBuilder()
    for d, entries in dirs.items():
        tb = repo.TreeBuilder() if d else root
        for name, text in entries.items():
            tb.insert(name, repo.create_blob(text.encode()), pygit2.GIT_FILEMODE_BLOB)
        if d:
            root.insert(d, tb.write(), pygit2.GIT_FILEMODE_TREE)
    return root.write()


def timed(fn, repeat: int = 1):  # type: ignore[no-untyped-def]
    times = []
    result = None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return result, times


def main() -> None:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        repo = pygit2.init_repository(tmp, bare=False)
        sig = pygit2.Signature("bench", "bench@example.com")
        tree_files = files(rng)
        t1 = write_tree(repo, tree_files)
        c1 = repo.create_commit("refs/heads/main", sig, sig, "base", t1, [])
        # change one group: bump a pin
        g = "groups/g7.yaml"
        tree_files[g] = tree_files[g].replace('.0"}', '.0"}', 1)
        lines = tree_files[g].splitlines()
        idx = next(i for i, line in enumerate(lines) if "version:" in line)
        v = lines[idx].split('version: "')[1][0]
        lines[idx] = lines[idx].replace(f'"{v}.0"', f'"{(int(v) % 3) + 1}.0"')
        tree_files[g] = "\n".join(lines) + "\n"
        t2 = write_tree(repo, tree_files)
        c2 = repo.create_commit("refs/heads/main", sig, sig, "bump g7", t2, [c1])
        repo.checkout_tree(repo[c2])

        device = "dev-4242"
        _, render_times = timed(lambda: render_device(FleetView(GitSource(repo, "main")), device), repeat=5)
        cli = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "reconciler", "render", tmp, "--rev", "main", "--device", device],
                           check=True, capture_output=True)
            cli.append(time.perf_counter() - t)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import reconciler.main"], check=True)
        python_start = time.perf_counter() - t
        problems, validate_times = timed(lambda: validate(FleetView(GitSource(repo, "main"))))
        result, plan_times = timed(lambda: plan(repo, str(c1), str(c2)), repeat=3)
        print(json.dumps({
            "fleet": {"devices": DEVICES, "groups": GROUPS, "models": MODELS},
            "render_one_device_ms": round(statistics.median(render_times) * 1000, 1),
            "render_command_wall_ms": round(statistics.median(cli) * 1000, 1),
            "python_import_only_ms": round(python_start * 1000, 1),
            "validate_whole_repo_s": round(validate_times[0], 2),
            "validate_problems": len(problems),
            "plan_one_group_change_s": round(statistics.median(plan_times), 3),
            "plan_devices_affected": len(result.devices) if result else None,
            "targets": {"render_ms": 100, "validate_s": 10, "plan_s": 5},
        }, indent=2))


if __name__ == "__main__":
    main()
