"""Benchmark the fleet views: ``reconciler status`` over 10,000 status branches, ``history`` over ~500 main commits.

Builds a bare fleet repo with pygit2 directly (blobs, trees, commits): main from fleet-config/ plus 10,000
device files and ~500 commits (pin changes, device edits), and one status branch per device, each with its
own status.yaml (name, lastSeen, applied commit, phase and models differ).  Every command runs as a child
process; its wall time and peak RSS (``os.wait4``) are reported.  Prints one JSON object.

Targets (issue 5): status < 10 s over 10,000 branches, memory flat in the number of devices.
``BENCH_STATUS_DEVICES`` (default 10000) and ``BENCH_STATUS_COMMITS`` (default 500) change the size.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEVICES = int(os.environ.get("BENCH_STATUS_DEVICES", "10000"))
COMMITS = int(os.environ.get("BENCH_STATUS_COMMITS", "500"))
HISTORY_DEVICE = "dev-00000"
STATUS_CHAIN = 200  # status commits of HISTORY_DEVICE
BLOB = pygit2.enums.FileMode.BLOB
TREE = pygit2.enums.FileMode.TREE
NOW = int(time.time())
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sig(name: str, email: str, when: int) -> pygit2.Signature:
    return pygit2.Signature(name, email, when, 0)


class Tree:
    """A two-level tree (root files and one level of directories); each write rebuilds only what changed, so
    a commit that edits one of 10,000 device files does not rewrite the whole devices/ listing."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self.files: dict[str, pygit2.Oid] = {}
        self.dir_ids: dict[str, pygit2.Oid | None] = {}
        self.pending: dict[str, dict[str, pygit2.Oid]] = {}

    def put(self, path: str, text: str) -> None:
        oid = self.repo.create_blob(text.encode())
        directory, _, name = path.rpartition("/")
        if directory:
            self.pending.setdefault(directory, {})[name] = oid
            self.dir_ids.setdefault(directory, None)
        else:
            self.files[name] = oid

    def write(self) -> pygit2.Oid:
        for directory, entries in self.pending.items():
            old = self.dir_ids.get(directory)
            builder = self.repo.TreeBuilder(self.repo[old]) if old is not None else self.repo.TreeBuilder()
            for name, oid in entries.items():
                builder.insert(name, oid, BLOB)
            self.dir_ids[directory] = builder.write()
        self.pending.clear()
        root = self.repo.TreeBuilder()
        for name, oid in self.files.items():
            root.insert(name, oid, BLOB)
        for directory, tree_id in self.dir_ids.items():
            assert tree_id is not None
            root.insert(directory, tree_id, TREE)
        oid: pygit2.Oid = root.write()
        return oid


def device_yaml(name: str, site: str) -> str:
    return (f"apiVersion: fleet/v1\nkind: Device\nmetadata:\n  name: {name}\n  labels: {{site: {site}, "
            f"arch: amd64, role: camera}}\nspec: {{}}\n")


def build_main(repo: pygit2.Repository, rng: random.Random) -> list[pygit2.Oid]:
    """~COMMITS commits on main; returns them oldest first."""
    tree = Tree(repo)
    for path in sorted((ROOT / "fleet-config").rglob("*.yaml")):
        tree.put(str(path.relative_to(ROOT / "fleet-config")), path.read_text())
    for i in range(DEVICES):
        tree.put(f"devices/dev-{i:05d}.yaml", device_yaml(f"dev-{i:05d}", "north" if i % 2 else "south"))
    all_group = (ROOT / "fleet-config" / "groups" / "all.yaml").read_text()
    people = ["Alice Ops <alice@acme.example>", "Bob Field <bob@acme.example>", "Carol Audit <carol@acme.example>"]
    commits: list[pygit2.Oid] = []
    parent: list[pygit2.Oid] = []
    for i in range(COMMITS):
        when = NOW - (COMMITS - i) * 3600
        if i == 0:
            message = "initial fleet"
        elif i % 10 == 0:  # a pin change every tenth commit: the only ones that change HISTORY_DEVICE
            version = "1.1.0" if (i // 10) % 2 else "1.0.0"
            tree.put("groups/all.yaml", all_group.replace('version: "1.0.0"', f'version: "{version}"')
                     + f"# change {i}\n")
            message = f"all: people-counter {version}"
        else:  # the rest edit other devices' files
            d = rng.randrange(1, DEVICES)
            tree.put(f"devices/dev-{d:05d}.yaml", device_yaml(f"dev-{d:05d}", f"site-{i}"))
            message = f"dev-{d:05d}: move to site-{i}"
        name, _, email = people[i % len(people)].partition(" <")
        author = sig(name, email.rstrip(">"), when)
        oid = repo.create_commit(None, author, author, message, tree.write(), parent)
        commits.append(oid)
        parent = [oid]
    repo.references.create("refs/heads/main", commits[-1])
    repo.set_head("refs/heads/main")
    return commits


def status_text(device: str, phase: str, applied: str, version: str, seen: int, error: str | None) -> str:
    doc = {
        "apiVersion": "fleet/v1", "kind": "DeviceStatus", "device": device, "agentVersion": "0.1.0",
        "runtime": "process", "observedCommit": applied, "appliedCommit": applied, "phase": phase,
        "conditions": [{"type": "Ready", "status": "False" if error else "True",
                        "reason": "HealthCheckFailed" if error else "ReconciliationSucceeded",
                        "message": error or "applied", "lastTransitionTime": iso(seen)}],
        "models": [
            {"name": "people-counter", "version": version, "state": "failed" if error else "running",
             "digest": "sha256:" + "ab" * 32, "since": iso(seen), "lastError": error, "group": "all",
             "performance": {"pullSeconds": 1.5, "startSeconds": 0.7, "memoryBytes": 52428800, "cpuPercent": 3.5}},
        ],
        "detectors": [{"detector_id": "det_2C3J27XDCG2LmlZGEONYlgCtjfI", "model": "people-counter", "version": version,
                       "state": "active"}],
        "drift": [], "lastSeen": iso(seen), "push": {"pending": 0, "lastError": None},
    }
    return yaml.dump(doc, Dumper=DUMPER, sort_keys=False)


def build_status(repo: pygit2.Repository, commits: list[pygit2.Oid], rng: random.Random) -> None:
    recent = [str(c) for c in commits[-5:]]
    for i in range(DEVICES):
        device = f"dev-{i:05d}"
        chain = STATUS_CHAIN if device == HISTORY_DEVICE else 1
        parent: list[pygit2.Oid] = []
        for n in range(chain):
            seen = NOW - rng.randrange(60, 10 * 86400) if chain == 1 else NOW - (chain - n) * 1800
            applied = recent[rng.randrange(5)] if chain == 1 else str(commits[max(0, len(commits) - chain + n)])
            failed = rng.random() < 0.02
            text = status_text(device, "Failed" if failed else "Ready", applied, "1.1.0" if n % 2 else "1.0.0", seen,
                               "health check failed after 60s" if failed else None)
            builder = repo.TreeBuilder()
            builder.insert("status.yaml", repo.create_blob(text.encode()), BLOB)
            s = sig(device, f"{device}@devices.fleet.invalid", seen)
            oid = repo.create_commit(None, s, s, "status", builder.write(), parent)
            parent = [oid]
        repo.references.create(f"refs/heads/status/{device}", parent[0])


def timed(argv: list[str]) -> dict[str, float]:
    """Run a reconciler command as a child; its wall seconds and peak RSS (MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"reconciler {' '.join(argv)} failed ({proc.returncode}): {err}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    rng = random.Random(5)
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        bare = Path(tmp) / "fleet.git"
        repo = pygit2.init_repository(str(bare), bare=True)
        t0 = time.perf_counter()
        commits = build_main(repo, rng)
        t1 = time.perf_counter()
        build_status(repo, commits, rng)
        t2 = time.perf_counter()
        small = Path(tmp) / "small.git"
        subprocess.run(["git", "clone", "-q", "--bare", "--single-branch", "--branch", "main", str(bare), str(small)],
                       check=True)
        result: dict[str, object] = {
            "devices": DEVICES, "main_commits": COMMITS, "status_chain_of_history_device": STATUS_CHAIN,
            "generate_main_seconds": round(t1 - t0, 2), "generate_status_seconds": round(t2 - t1, 2),
            "cpus": os.cpu_count(),
        }
        base = ["--repo", str(bare)]
        result["status_no_branches_baseline"] = timed(["status", "--repo", str(small), "--format", "json"])
        result["status_json_loose"] = timed(["status", *base, "--format", "json"])
        result["status_table_loose"] = timed(["status", *base])
        subprocess.run(["git", "--git-dir", str(bare), "gc", "-q", "--prune=now"], check=True)
        result["status_json_packed"] = timed(["status", *base, "--format", "json"])
        result["status_table_packed"] = timed(["status", *base])
        cache = Path(tmp) / "cache.git"
        url = ["--repo", f"file://{bare}", "--cache-dir", str(cache), "--format", "json"]
        result["status_file_url_first_fetch"] = timed(["status", *url])
        result["status_file_url_cached"] = timed(["status", *url])
        result["history_device"] = timed(["history", *base, "--device", HISTORY_DEVICE, "--format", "json"])
        result["history_device_text"] = timed(["history", *base, "--device", HISTORY_DEVICE])
        result["history_model_all_devices"] = timed(["history", *base, "--model", "people-counter", "--format",
                                                     "json", "--since", iso(NOW - 3 * 86400)])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
