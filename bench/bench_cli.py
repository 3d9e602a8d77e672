"""CLI start-up: ``reconciler validate fleet-config`` and ``render fleet-config --device`` as whole processes,
against ``python -c pass`` with the same interpreter (issue 14 target: <= 3x).

Each command runs ``--runs`` times (default 9), interleaved so that a noisy neighbour slows all alike; wall
time (perf_counter around the process) and CPU time (the children's rusage) are reported as median, min and
max, and the ratio of medians to ``python -c pass``.  The console script is the one pip installed (an editable
install adds its import hook to every start; a wheel install does not).  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "reconciler"
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "validate fleet-config": [str(SCRIPT), "validate", str(ROOT / "fleet-config")],
    "render --device cam-north-01": [str(SCRIPT), "render", str(ROOT / "fleet-config"), "--device", "cam-north-01"],
}


def once(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(runs: int) -> dict[str, object]:
    walls: dict[str, list[float]] = {k: [] for k in COMMANDS}
    cpus: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for cmd in COMMANDS.values():
        once(cmd)  # warm the page cache and the bytecode
    for _ in range(runs):
        for name, cmd in COMMANDS.items():
            wall, cpu = once(cmd)
            walls[name].append(wall)
            cpus[name].append(cpu)

    def summary(values: list[float]) -> dict[str, float]:
        return {"median_ms": round(statistics.median(values) * 1000, 1), "min_ms": round(min(values) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1)}

    base_wall = statistics.median(walls["python -c pass"])
    base_cpu = statistics.median(cpus["python -c pass"])
    return {
        "runs": runs,
        "wall": {k: summary(v) for k, v in walls.items()},
        "cpu": {k: summary(v) for k, v in cpus.items()},
        "ratio_wall_vs_python": {k: round(statistics.median(v) / base_wall, 2) for k, v in walls.items()},
        "ratio_cpu_vs_python": {k: round(statistics.median(v) / base_cpu, 2) for k, v in cpus.items()},
        "target_ratio": 3.0,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    print(json.dumps(main(parser.parse_args().runs), indent=2))
