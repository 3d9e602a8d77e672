"""Air-gap bundles with a 256 MiB model: ``bundle create`` once, then ``bundle apply`` on a fresh device
against ``cp`` of the same bundle file (issue 17 targets: apply throughput >= 0.7x cp, peak RSS < 100 MiB).

Each apply runs in a child process with a fresh data dir (so its VmHWM is the apply's own), offline (the
repo URL points at a closed port; the registry is stopped before the first apply).  Two figures per apply:
``medium_to_store`` is reading the bundle and copying every blob into the store, hashed, fsynced and verified
(what ``cp`` does, plus the sha256 and the fsync that cp does not: so ``cp`` then ``sync FILE`` is reported
too); ``whole_apply`` adds the git fetch, the
pass, activation and starting the model until its health check answers.  ``cp`` and apply alternate, --runs
times (default 5); median, min and max are reported, and ratios of medians (cp seconds / ours).  Prints one
JSON object.  python bench/bench_bundle.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 1024 * 1024
SIZE = 256 * MiB


def _child(config: str, bundle: str) -> None:
    import reconciler.bundle.apply as apply_module
    from reconciler.agent import config as agentconfig
    from reconciler.agent.reconcile import Reconciler
    from tests.agentlab import stop_workloads

    timed: dict[str, float] = {}
    read = apply_module.read_bundle

    def timed_read(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return read(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            timed["medium_to_store"] = time.perf_counter() - started

    apply_module.read_bundle = timed_read  # type: ignore[assignment]
    cfg = agentconfig.load(Path(config))
    started = time.perf_counter()
    with stop_workloads(cfg.data_dir):
        result = apply_module.apply_bundle(Reconciler(cfg), Path(bundle), status_dir=None)
        timed["whole_apply"] = time.perf_counter() - started
        assert result.cycle.ready, result.cycle.error
    status = Path("/proc/self/status").read_text()
    hwm_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
    print(json.dumps({**timed, "peak_rss_mib": hwm_kib / 1024}))


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main(runs: int) -> dict[str, object]:
    from reconciler.artifacts import Reference, RegistryClient
    from reconciler.main import main as cli
    from tests.agentlab import Lab
    from tests.services.registry import run_registry

    for key, value in {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
                       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
                       "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}.items():
        os.environ[key] = value
    report: dict[str, object] = {"bench": "bundle", "cpus": os.cpu_count(), "model_bytes": SIZE, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        work = Path(tmp)
        src = work / "src"
        src.mkdir()
        shutil.copy(ROOT / "examples/model-server/serve.py", src / "serve.py")
        with open(src / "weights.bin", "wb") as f:
            for _ in range(SIZE // (8 * MiB)):
                f.write(os.urandom(8 * MiB))
        bundle = work / "fleet.tar"
        with run_registry(work / "registry") as server:
            client = RegistryClient(None, None, deadline_seconds=600)
            ref = Reference.parse(server.ref("models/counter", "v1"))
            pinned = str(ref.pinned(client.push(ref, [src / "serve.py", src / "weights.bin"], {})))
            (src / "weights.bin").unlink()
            lab = Lab(work / "lab", server.address, {"1.0": pinned})
            lab.setup()
            started = time.perf_counter()
            assert cli(["bundle", "create", "--repo", str(lab.server), "--device", "dev1", "-o", str(bundle)]) == 0
            report["create_seconds"] = round(time.perf_counter() - started, 3)
        report["bundle_bytes"] = bundle.stat().st_size
        cp_s: list[float] = []
        cp_sync_s: list[float] = []
        ours: list[dict[str, float]] = []
        for i in range(runs):
            target = work / "cp-target"
            target.mkdir()
            started = time.perf_counter()
            subprocess.run(["cp", str(bundle), str(target / "fleet.tar")], check=True)
            cp_s.append(time.perf_counter() - started)
            started = time.perf_counter()  # cp, then fsync of the copy: what the store's durability costs
            subprocess.run(["cp", str(bundle), str(target / "synced.tar")], check=True)
            subprocess.run(["sync", str(target / "synced.tar")], check=True)
            cp_sync_s.append(time.perf_counter() - started)
            shutil.rmtree(target)  # removed at once, like the device's data dir below (first-touch pages)
            config = lab.config_path()
            text = config.read_text().replace(f"url: {lab.server}", "url: ssh://git@127.0.0.1:9/fleet.git")
            text = text.replace(str(lab.data_dir), str(work / f"data-{i}"))
            config.write_text(text)
            out = subprocess.run([sys.executable, __file__, "--child", str(config), str(bundle)],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            ours.append(json.loads(out.stdout.strip().splitlines()[-1]))
            shutil.rmtree(work / f"data-{i}")
        cp_median = statistics.median(cp_s)
        size_mib = report["bundle_bytes"] / MiB  # type: ignore[operator]
        report["cp_seconds"] = _stats(cp_s)
        report["cp_MiB_s"] = round(size_mib / cp_median, 1)
        report["cp_then_sync_seconds"] = _stats(cp_sync_s)
        for figure in ("medium_to_store", "whole_apply"):
            values = [r[figure] for r in ours]
            report[f"{figure}_seconds"] = _stats(values)
            report[f"{figure}_MiB_s"] = round(size_mib / statistics.median(values), 1)
            report[f"{figure}_ratio_vs_cp"] = round(cp_median / statistics.median(values), 2)
            report[f"{figure}_ratio_vs_cp_then_sync"] = round(statistics.median(cp_sync_s) / statistics.median(values), 2)
        report["peak_rss_MiB"] = round(max(r["peak_rss_mib"] for r in ours), 1)
    return report


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3])
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--runs", type=int, default=5)
        print(json.dumps(main(parser.parse_args().runs)))
