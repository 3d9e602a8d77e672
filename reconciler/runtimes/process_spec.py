"""What the process runtime runs for a workload: the argv (``${NAME}`` expanded, executable checked), a
minimal environment, the resource hints, and the ``spec.json`` document the supervisor reads.

Pure apart from looking the executable up: kept apart from ``process.py`` so the translation from a workload
is read and unit-tested on its own, and ``process.py`` holds only the supervising of state dirs.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import InvalidConfig, NotFound
from reconciler.model import Workload
from reconciler.quantities import memory_bytes

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BASE_ENV = ("PATH", "LANG", "HOME", "TZ")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def cpu_affinity(cpus: float, model: str, allowed: list[int] | None = None) -> list[int]:
    """ceil(cpus) of the cores this agent may use, starting at a core chosen by the model name so that
    several pinned workloads spread over the machine instead of all sharing core 0."""
    cores = sorted(allowed if allowed is not None else os.sched_getaffinity(0))
    count = min(len(cores), max(1, math.ceil(cpus)))
    first = int(hashlib.sha256(model.encode()).hexdigest()[:8], 16) % len(cores)
    return sorted(cores[(first + i) % len(cores)] for i in range(count))


def expand(arg: str, env: Mapping[str, str]) -> str:
    """Replace ``${NAME}`` by its value in the workload's environment; unknown names are left for a shell."""
    return _REF.sub(lambda m: env.get(m.group(1), m.group(0)), arg)


def workload_env(workload: Workload, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal base, the version's env, then our four variables.  Never the agent's whole environment:
    it may hold registry or git credentials."""
    source = os.environ if environ is None else environ
    env = {key: source[key] for key in _BASE_ENV if key in source}
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("LANG", "C.UTF-8")
    env.update(dict(workload.env))
    env.update(
        MODEL_NAME=workload.model,
        MODEL_VERSION=workload.version,
        MODEL_DIR=workload.model_dir,
        DETECTORS_CONFIG=workload.detectors_config,
    )
    return env


def describe(workload: Workload) -> str:
    return f"model {workload.model!r} version {workload.version!r}"


def resolve_command(workload: Workload, env: Mapping[str, str]) -> list[str]:
    """The argv to run, expanded, with its executable checked now so a typo fails the start, not a restart."""
    if not workload.command:
        raise InvalidConfig(f"{describe(workload)}: no command to run (the process runtime needs one)")
    if not Path(workload.model_dir).is_dir():
        raise NotFound(f"{describe(workload)}: model dir {workload.model_dir} does not exist")
    argv = [expand(arg, env) for arg in workload.command]
    exe = argv[0]
    if "/" in exe:
        path = Path(workload.model_dir, exe)
        if not path.is_file():
            raise NotFound(f"{describe(workload)}: command {exe!r} not found (relative to {workload.model_dir})")
        if not os.access(path, os.X_OK):
            raise NotFound(f"{describe(workload)}: command {exe!r} is not executable")
    elif shutil.which(exe, path=env["PATH"]) is None:
        raise NotFound(f"{describe(workload)}: command {exe!r} not found on PATH {env['PATH']}")
    return argv


def run_spec(
    workload: Workload, argv: list[str], env: dict[str, str], supervisor: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``spec.json`` of a start: what the supervisor runs, and what ``observe`` reads back."""
    res = workload.resources
    return {
        "device": workload.device,
        "model": workload.model,
        "version": workload.version,
        "specHash": workload.spec_hash,
        "argv": argv,
        "env": env,
        "cwd": workload.model_dir,
        "cpuAffinity": cpu_affinity(res.cpus, workload.model) if res.cpus else None,
        # RLIMIT_DATA, not RLIMIT_AS or RLIMIT_RSS: Linux ignores RLIMIT_RSS, and RLIMIT_AS counts address
        # space reserved but never touched (Go, the JVM, CUDA and glibc arenas reserve far more than they
        # use), so it kills healthy models.  RLIMIT_DATA (Linux >= 4.7) counts private writable mappings:
        # the heap and anonymous mmaps a leaking model grows.  A hard cap needs cgroups (docker runtime).
        "memoryLimitBytes": memory_bytes(res.memory) if res.memory else None,
        "gpus": res.gpus,
        "supervisor": supervisor,
        "createdAt": time.time(),
    }
