"""Benchmark the rollout controller: evaluate one rollout over 10,000 status branches.

Builds a bare fleet repo with pygit2 (bench_status.py's builders): fleet-config's fleet.yaml and models,
a group ``all`` pinning people-counter 1.0.0, 10,000 device files, a rollout at its last step (100%: every
device is in the cohort, the worst case) whose step began two commits before the tip, and one status branch
per device (most healthy on 1.1.0, 2% rolled back, 3% still on an older commit).

Reported (JSON), each the median of RUNS runs with min and max:
- ``rollout_status``: ``reconciler rollout status --repo BARE --format json`` as a child process (what a cron
  job pays, Python start-up included), with its peak RSS;
- ``evaluate_in_process``: the controller's evaluation alone (``rollout.controller.evaluate``);
- ``reference_status``: ``reconciler status --format json`` over the same branches (the views' reading of
  every status branch), and the ratio rollout_status / reference_status.
Target (issue 15): < 10 s.  ``BENCH_ROLLOUT_DEVICES`` (default 10000), ``BENCH_RUNS`` (default 5).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pygit2

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_status as common  # the builders of the status bench, shared

ROOT = Path(__file__).resolve().parent.parent
DEVICES = int(os.environ.get("BENCH_ROLLOUT_DEVICES", "10000"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
GROUP = """apiVersion: fleet/v1
kind: Group
metadata: {name: all}
spec:
  models:
    - name: people-counter
      version: "1.0.0"
"""


def rollout(step: int) -> str:
    status = f"status:\n  step: {step}\n  phase: Progressing\n" if step else ""
    return ("apiVersion: fleet/v1\nkind: Rollout\nmetadata: {name: pc}\nspec:\n  group: all\n"
            "  model: people-counter\n  from: \"1.0.0\"\n  to: \"1.1.0\"\n"
            "  steps: [{devices: [dev-00000]}, {percent: 25}, {percent: 100}]\n"
            "  gates: {maxFailed: \"5%\", minReporting: 90}\n" + status)


def build(repo: pygit2.Repository, rng: random.Random) -> list[pygit2.Oid]:
    tree = common.Tree(repo)
    tree.put("fleet.yaml", (ROOT / "fleet-config/fleet.yaml").read_text())
    tree.put("models/people-counter.yaml", (ROOT / "fleet-config/models/people-counter.yaml").read_text())
    tree.put("groups/all.yaml", GROUP)
    for i in range(DEVICES):
        tree.put(f"devices/dev-{i:05d}.yaml", common.device_yaml(f"dev-{i:05d}", "north" if i % 2 else "south"))
    commits: list[pygit2.Oid] = []
    steps = [("fleet", None), ("start rollout pc", 0), ("advance", 1), ("advance", 2), ("edit a device", None),
             ("edit a device", None)]
    for i, (message, step) in enumerate(steps):
        if step is not None:
            tree.put("rollouts/pc.yaml", rollout(step))
        elif i:
            d = rng.randrange(DEVICES)
            tree.put(f"devices/dev-{d:05d}.yaml", common.device_yaml(f"dev-{d:05d}", f"site-{i}"))
        s = common.sig("Alice Ops", "alice@acme.example", common.NOW - (len(steps) - i) * 600)
        commits.append(repo.create_commit(None, s, s, message, tree.write(), commits[-1:]))
    repo.references.create("refs/heads/main", commits[-1])
    repo.set_head("refs/heads/main")
    return commits


def build_status(repo: pygit2.Repository, commits: list[pygit2.Oid], rng: random.Random) -> None:
    for i in range(DEVICES):
        device = f"dev-{i:05d}"
        roll = rng.random()
        applied = str(commits[1] if roll < 0.03 else commits[-1 - rng.randrange(3)])
        failed = 0.03 <= roll < 0.05
        text = common.status_text(device, "Degraded" if failed else "Ready", applied, "1.1.0" if not failed else "1.0.0",
                                  common.NOW - 60, "health check failed" if failed else None)
        if failed:
            text = text.replace("state: failed", "state: rolledBack\n  desiredVersion: 1.1.0")
        builder = repo.TreeBuilder()
        builder.insert("status.yaml", repo.create_blob(text.encode()), common.BLOB)
        s = common.sig(device, f"{device}@devices.fleet.invalid", common.NOW - 60)
        repo.references.create(f"refs/heads/status/{device}", repo.create_commit(None, s, s, "status",
                                                                                  builder.write(), []))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def main() -> None:
    from reconciler.rollout.controller import evaluate
    from reconciler.views.fleetrepo import open_fleet_repo

    rng = random.Random(15)
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        bare = Path(tmp) / "fleet.git"
        repo = pygit2.init_repository(str(bare), bare=True)
        commits = build(repo, rng)
        build_status(repo, commits, rng)
        cli, rss, ref, inproc = [], [], [], []
        counts: dict[str, int] = {}
        for _ in range(RUNS):
            r = common.timed(["rollout", "status", "--repo", str(bare), "--format", "json"])
            cli.append(r["seconds"])
            rss.append(r["peak_rss_mib"])
            ref.append(common.timed(["status", "--repo", str(bare), "--format", "json"])["seconds"])
            fleet = open_fleet_repo(str(bare))
            start = time.perf_counter()
            [ev] = evaluate(fleet, fleet.main_tip(), time.time())
            inproc.append(time.perf_counter() - start)
            counts = ev.counts.to_dict()
        result = {
            "devices": DEVICES, "runs": RUNS, "cpus": os.cpu_count(), "cohort": counts,
            "rollout_status_seconds": spread(cli), "rollout_status_peak_rss_mib": spread(rss),
            "evaluate_in_process_seconds": spread(inproc), "reference_status_seconds": spread(ref),
            "ratio_rollout_to_status": round(statistics.median(cli) / statistics.median(ref), 2),
            "target_seconds": 10,
        }
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
