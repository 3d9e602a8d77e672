"""The ``process`` runtime (the embedded default): each workload is a local command under its own detached
supervisor (``reconciler/runtimes/supervisor.py``).

Layout, one state dir per workload under ``DATA_DIR/process/``::

    <device>--<model>--<version>--<spec_hash>/
        spec.json        what to run (argv, env, cwd, resource hints, supervisor timing); written before spawn
        state.json       the supervisor's view: pids with their start times, restarts, last exit code
        output.log[.1]   the command's output, size-capped
        supervisor.log   the supervisor's own stderr (a traceback, should it ever crash)

The spec hash in the name lets two versions of one model run side by side during a replacement.  A state dir
appears by rename of a complete temp dir (``.tmp-*``), so a power cut leaves either nothing or a whole spec.
Only dirs carrying our ``spec.json`` are ever observed, signalled or removed, and a pid is trusted only when
its start time matches the recorded one and its command line names the supervisor of that very dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import InvalidConfig, NotFound, Transient
from reconciler.model import HealthResult, Observed, Workload
from reconciler.runtimes import health
from reconciler.runtimes.supervisor import (
    LOG_FILE,
    MODULE,
    OLD_LOG_FILE,
    SPEC_FILE,
    STATE_FILE,
    fsync_dir,
    proc_start_ticks,
    read_json,
    write_json_atomic,
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_BASE_ENV = ("PATH", "LANG", "HOME", "TZ")
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_TEMP_MAX_AGE = 300.0


def parse_memory(text: str | int) -> int:
    """``1536m``, ``1g``, ``512Mi``, ``100MiB`` or a byte count -> bytes.  Units are binary, as Docker reads
    them."""
    if isinstance(text, int):
        return text
    m = _MEMORY.match(text)
    if not m:
        raise InvalidConfig(f"resources.memory: cannot read {text!r} (expected e.g. 512m, 1g, 1536Mi)")
    power = " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * 1024**power)


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


def _what(workload: Workload) -> str:
    return f"model {workload.model!r} version {workload.version!r}"


def resolve_command(workload: Workload, env: Mapping[str, str]) -> list[str]:
    """The argv to run, expanded, with its executable checked now so a typo fails the start, not a restart."""
    if not workload.command:
        raise InvalidConfig(f"{_what(workload)}: no command to run (the process runtime needs one)")
    if not Path(workload.model_dir).is_dir():
        raise NotFound(f"{_what(workload)}: model dir {workload.model_dir} does not exist")
    argv = [expand(arg, env) for arg in workload.command]
    exe = argv[0]
    if "/" in exe:
        path = Path(workload.model_dir, exe)
        if not path.is_file():
            raise NotFound(f"{_what(workload)}: command {exe!r} not found (relative to {workload.model_dir})")
        if not os.access(path, os.X_OK):
            raise NotFound(f"{_what(workload)}: command {exe!r} is not executable")
    elif shutil.which(exe, path=env["PATH"]) is None:
        raise NotFound(f"{_what(workload)}: command {exe!r} not found on PATH {env['PATH']}")
    return argv


def _safe(part: str) -> str:
    return _UNSAFE.sub("_", part)[:64] or "_"


def _cpu_percent(pid: int) -> float | None:
    """Average CPU use since the process started (user + system time over its age), in percent of one core."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    hz = os.sysconf("SC_CLK_TCK")
    age = uptime - int(fields[19]) / hz
    if age <= 0:
        return None
    return round(100.0 * (int(fields[11]) + int(fields[12])) / hz / age, 1)


def _vm_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class ProcessRuntime:
    name = "process"
    parallel_ports = False  # a fixed port is a host port: two versions cannot hold it at once

    def __init__(self, data_dir: Path, options: Mapping[str, Any]) -> None:
        self.root = Path(data_dir).absolute() / "process"
        self.options = options
        self.grace = float(options.get("stopGrace", 10.0))
        self.start_timeout = float(options.get("startTimeout", 10.0))
        self.supervisor_options = {
            "backoff": float(options.get("restartBackoff", 1.0)),
            "backoffMax": float(options.get("restartBackoffMax", 60.0)),
            "resetAfter": float(options.get("restartResetAfter", 30.0)),
            "stopGrace": self.grace,
            "logMaxBytes": int(options.get("logMaxBytes", 1 << 20)),
        }

    # -- the Runtime protocol --------------------------------------------------------------------------
    def observe(self, device: str, with_stats: bool = True) -> list[Observed]:  # /proc reads are cheap
        self._sweep_temp()
        found = []
        for path, spec in self._entries():
            if spec.get("device") == device:
                found.append(self._observe_dir(path, spec))
        return sorted(found, key=lambda o: (o.model, o.version, o.started_at))

    def start(self, workload: Workload) -> Observed:
        env = workload_env(workload)
        argv = resolve_command(workload, env)
        spec = self._spec(workload, argv, env)
        existing = self._find(workload.spec_hash)
        if existing is not None:
            state = read_json(existing / STATE_FILE) or {}
            if self._supervisor_alive(existing, state):
                return self._observe_dir(existing, read_json(existing / SPEC_FILE) or spec)
            self._remove(existing)
        path = self._create_dir(workload, spec)
        self._spawn_supervisor(path, workload)
        state = self._wait_started(path, workload)
        if state.get("spawnError"):
            self._remove(path)
            raise NotFound(f"{_what(workload)}: {state['spawnError']}")
        return self._observe_dir(path, spec)

    def check_health(self, workload: Workload, observed: Observed) -> HealthResult:
        path = self._locate(observed)

        def probe() -> str | None:
            if path is None:
                return "not running (no state dir)"
            state = self._settled_state(path)
            if not self._supervisor_alive(path, state):
                return "supervisor not running" + _last_exit(state)
            if not _child_alive(state):
                return f"process {state.get('lastError') or 'not running'}"
            if state.get("restarts", 0) != observed.restarts or state.get("startedAt") != observed.started_at:
                return f"process restarted ({state.get('restarts', 0)} restarts){_last_exit(state)}"
            return None

        check = workload.health
        port = check.port or workload.port
        if check.path and port:
            url = f"http://127.0.0.1:{port}/{check.path.lstrip('/')}"
            return health.http_check(url, check.timeout, probe=probe)
        return health.alive_check(probe, check.alive_seconds)

    def stop(self, observed: Observed) -> None:
        path = self._locate(observed)
        if path is not None:
            self._remove(path)

    def reload(self, observed: Observed) -> None:
        path = self._locate(observed)
        state = (read_json(path / STATE_FILE) if path is not None else None) or {}
        if path is None or not self._supervisor_alive(path, state):
            what = f"model {observed.model!r} version {observed.version!r}"
            raise NotFound(f"{what} is not running: cannot reload")
        # The supervisor forwards it to the command only, not its whole group (like `docker kill -s HUP`).
        os.kill(int(state["supervisorPid"]), signal.SIGHUP)

    def logs(self, observed: Observed, lines: int = 20) -> str:
        path = self._locate(observed)
        if path is None or lines <= 0:
            return ""
        data = b""
        for name in (OLD_LOG_FILE, LOG_FILE):
            with contextlib.suppress(OSError):
                data += (path / name).read_bytes()
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    # -- state dirs ------------------------------------------------------------------------------------
    def _entries(self) -> list[tuple[Path, dict[str, Any]]]:
        try:
            children = sorted(self.root.iterdir())
        except FileNotFoundError:
            return []
        found = []
        for path in children:
            if path.name.startswith(".") or not path.is_dir():
                continue
            spec = read_json(path / SPEC_FILE)
            if spec is not None and f"--{spec.get('specHash')}--" in f"{path.name}--":
                found.append((path, spec))
        return found

    def _find(self, spec_hash: str) -> Path | None:
        return next((p for p, spec in self._entries() if spec.get("specHash") == spec_hash), None)

    def _locate(self, observed: Observed) -> Path | None:
        """The state dir of ``observed``: several dirs can hold one spec after a crash mid-start."""
        paths = [p for p, spec in self._entries() if spec.get("specHash") == observed.spec_hash]
        for p in paths:
            if str((read_json(p / STATE_FILE) or {}).get("supervisorPid") or 0) == observed.handle:
                return p
        return paths[0] if paths else None

    def _spec(self, workload: Workload, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
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
            "memoryLimitBytes": parse_memory(res.memory) if res.memory else None,
            "gpus": res.gpus,
            "supervisor": self.supervisor_options,
            "createdAt": time.time(),
        }

    def _create_dir(self, workload: Workload, spec: dict[str, Any]) -> Path:
        parts = [_safe(workload.device), _safe(workload.model), _safe(workload.version), workload.spec_hash]
        # A token per start: a supervisor orphaned by a power cut mid-start never shares a dir with a new one.
        name = "--".join([*parts, uuid.uuid4().hex[:8]])
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(mode=0o700)
        write_json_atomic(tmp / SPEC_FILE, spec)
        final = self.root / name
        os.rename(tmp, final)
        fsync_dir(self.root)
        return final

    def _spawn_supervisor(self, path: Path, workload: Workload) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LANG": "C.UTF-8", "PYTHONPATH": package_root}
        try:
            with open(path / "supervisor.log", "ab") as log:
                launcher = subprocess.Popen(
                    [sys.executable, "-m", MODULE, str(path)],
                    cwd=path,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            # The launcher forks the supervisor and exits at once; reaping it here leaves no zombie behind.
            launcher.wait(timeout=self.start_timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._remove(path)
            raise Transient(f"{_what(workload)}: cannot launch its supervisor: {exc}") from None

    def _wait_started(self, path: Path, workload: Workload) -> dict[str, Any]:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            state = read_json(path / STATE_FILE) or {}
            if state.get("spawns", 0) > 0:
                return state
            if state and not self._supervisor_alive(path, state):
                break
            time.sleep(0.02)
        self._remove(path)
        raise Transient(
            f"{_what(workload)}: supervisor did not start within {self.start_timeout:g}s"
            f" (see {path.name}/supervisor.log)"
        )

    def _remove(self, path: Path) -> None:
        state = read_json(path / STATE_FILE) or {}
        if self._supervisor_alive(path, state):
            pid = int(state["supervisorPid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace + 5.0
            while self._supervisor_alive(path, state) and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._supervisor_alive(path, state):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            state = read_json(path / STATE_FILE) or state
        # A supervisor killed by power loss or SIGKILL leaves its command behind: take its group down too,
        # but only when the pid still is that very process (start time matches) and leads its own group.
        if _child_alive(state):
            child = int(state["childPid"])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(child) == child:
                    os.killpg(child, signal.SIGKILL)
        trash = self.root / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def _sweep_temp(self) -> None:
        """Remove temp and trash dirs left by a power cut (old enough that no start is still writing them)."""
        try:
            children = list(self.root.iterdir())
        except FileNotFoundError:
            return
        now = time.time()
        for path in children:
            if path.name.startswith((".tmp-", ".trash-")) and path.is_dir():
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime > _TEMP_MAX_AGE:
                        shutil.rmtree(path, ignore_errors=True)

    def _supervisor_alive(self, path: Path, state: Mapping[str, Any]) -> bool:
        pid = int(state.get("supervisorPid") or 0)
        ticks = proc_start_ticks(pid)
        if ticks is None or ticks != state.get("supervisorStart"):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return MODULE.encode() in cmdline and str(path).encode() in cmdline

    def _settled_state(self, path: Path, patience: float = 1.0) -> dict[str, Any]:
        """The state file, read again for a moment when the command just died and its live supervisor has not
        yet recorded how (so a report says "exited with code 3" rather than "not running")."""
        deadline = time.monotonic() + patience
        while True:
            state = read_json(path / STATE_FILE) or {}
            if state.get("phase") != "running" or _child_alive(state) or time.monotonic() >= deadline:
                return state
            if not self._supervisor_alive(path, state):
                return state
            time.sleep(0.02)

    def _observe_dir(self, path: Path, spec: Mapping[str, Any]) -> Observed:
        # A supervisor launched just before a crash may still be starting: give it its start timeout.
        deadline = float(spec.get("createdAt") or 0.0) + self.start_timeout
        while not (path / STATE_FILE).exists() and time.time() < deadline:
            time.sleep(0.05)
        state = self._settled_state(path)
        notes = []
        if spec.get("gpus") not in (None, 0, "0"):
            notes.append("gpus hint ignored: the process runtime cannot assign GPUs")
        memory = cpu = None
        if not self._supervisor_alive(path, state):
            status = "exited"
            notes.insert(0, "supervisor not running" + _last_exit(state))
        elif _child_alive(state):
            status = "running"
            memory = _vm_rss(int(state["childPid"]))
            cpu = _cpu_percent(int(state["childPid"]))
        else:
            status = "exited"
            wait = max(0.0, float(state.get("nextRestartAt") or 0.0) - time.time())
            notes.insert(0, f"process {state.get('lastError') or 'not started'}; restarting in {wait:.1f}s")
        return Observed(
            model=str(spec.get("model")),
            version=str(spec.get("version")),
            spec_hash=str(spec.get("specHash")),
            handle=str(state.get("supervisorPid") or 0),
            state=status,
            started_at=float(state.get("startedAt") or 0.0),
            memory_bytes=memory,
            cpu_percent=cpu,
            restarts=int(state.get("restarts") or 0),
            message="; ".join(notes),
        )


def _child_alive(state: Mapping[str, Any]) -> bool:
    pid = int(state.get("childPid") or 0)
    return pid > 0 and proc_start_ticks(pid) == state.get("childStart")


def _last_exit(state: Mapping[str, Any]) -> str:
    code = state.get("lastExitCode")
    return "" if code is None else f" (last exit code {code})"
