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

Beside this module: ``process_spec`` (workload -> argv, env, ``spec.json``), ``process_dirs`` (the state dir
layout) and ``process_state`` (whether recorded pids are still ours, and their CPU and memory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.credentials import CredentialStore, storage_env
from reconciler.errors import NotFound, Transient
from reconciler.model import HealthResult, Observed, Workload
from reconciler.runtimes import golden, health, process_dirs
from reconciler.runtimes.process_spec import DEFAULT_PATH, describe, resolve_command, run_spec, workload_env
from reconciler.runtimes.process_state import (
    child_alive,
    cpu_percent,
    last_exit,
    settled_state,
    supervisor_alive,
    vm_rss,
)
from reconciler.runtimes.supervisor import (
    LOG_FILE,
    MODULE,
    OLD_LOG_FILE,
    SECRET_ENV_PREFIX,
    SPEC_FILE,
    STATE_FILE,
    fsync_dir,
    read_json,
)


class ProcessRuntime:
    name = "process"
    parallel_ports = False  # a fixed port is a host port: two versions cannot hold it at once

    def __init__(self, data_dir: Path, options: Mapping[str, Any]) -> None:
        self.root = Path(data_dir).absolute() / "process"
        self.options = options
        self.credentials: CredentialStore = options.get("credentials") or CredentialStore({})
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
        process_dirs.sweep_temp(self.root)
        found = []
        for path, spec in self._entries():
            if spec.get("device") == device:
                found.append(self._observe_dir(path, spec))
        return sorted(found, key=lambda o: (o.model, o.version, o.started_at))

    def start(self, workload: Workload) -> Observed:
        env = workload_env(workload)
        argv = resolve_command(workload, env)
        spec = run_spec(workload, argv, env, self.supervisor_options)
        existing = self._find(workload.spec_hash)
        if existing is not None:
            state = read_json(existing / STATE_FILE) or {}
            if supervisor_alive(existing, state):
                return self._observe_dir(existing, read_json(existing / SPEC_FILE) or spec)
            self._remove(existing)
        secret = storage_env(workload.storage_credentials, self.credentials)
        path = process_dirs.create_dir(self.root, workload, spec)
        self._spawn_supervisor(path, workload, secret)
        state = self._wait_started(path, workload)
        if state.get("spawnError"):
            self._remove(path)
            raise NotFound(f"{describe(workload)}: {state['spawnError']}")
        return self._observe_dir(path, spec)

    def unsupported(self, workload: Workload) -> list[str]:
        out = []
        if workload.resources.gpus not in (None, 0):
            out.append(f"resources.gpus {workload.resources.gpus!r} is not honoured by the process runtime (it "
                       "cannot grant or isolate GPUs): use runtime docker")
        return out

    def check_health(self, workload: Workload, observed: Observed) -> HealthResult:
        path = self._locate(observed)

        def probe() -> str | None:
            if path is None:
                return "not running (no state dir)"
            state = settled_state(path)
            if not supervisor_alive(path, state):
                return "supervisor not running" + last_exit(state)
            if not child_alive(state):
                return f"process {state.get('lastError') or 'not running'}"
            if state.get("restarts", 0) != observed.restarts or state.get("startedAt") != observed.started_at:
                return f"process restarted ({state.get('restarts', 0)} restarts){last_exit(state)}"
            return None

        check = workload.health
        port = check.port or workload.port
        if check.path and port:
            url = f"http://127.0.0.1:{port}/{check.path.lstrip('/')}"
            result = health.http_check(url, check.timeout, probe=probe)
            if result.healthy and check.golden is not None:
                return golden.check("127.0.0.1", port, workload.model_dir, check.golden, check.timeout)
            return result
        return health.alive_check(probe, check.alive_seconds)

    def stop(self, observed: Observed) -> None:
        path = self._locate(observed)
        if path is not None:
            self._remove(path)

    def reload(self, observed: Observed) -> None:
        path = self._locate(observed)
        state = (read_json(path / STATE_FILE) if path is not None else None) or {}
        if path is None or not supervisor_alive(path, state):
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
        return process_dirs.entries(self.root)

    def _find(self, spec_hash: str) -> Path | None:
        return next((p for p, spec in self._entries() if spec.get("specHash") == spec_hash), None)

    def _locate(self, observed: Observed) -> Path | None:
        """The state dir of ``observed``: several dirs can hold one spec after a crash mid-start."""
        paths = [p for p, spec in self._entries() if spec.get("specHash") == observed.spec_hash]
        for p in paths:
            if str((read_json(p / STATE_FILE) or {}).get("supervisorPid") or 0) == observed.handle:
                return p
        return paths[0] if paths else None

    def _spawn_supervisor(self, path: Path, workload: Workload, secret: Mapping[str, str]) -> None:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "LANG": "C.UTF-8", "PYTHONPATH": package_root}
        # secrets reach the command through the supervisor's own environment, never through spec.json on disk
        env.update({SECRET_ENV_PREFIX + k: v for k, v in secret.items()})
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
            raise Transient(f"{describe(workload)}: cannot launch its supervisor: {exc}") from None

    def _wait_started(self, path: Path, workload: Workload) -> dict[str, Any]:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            state = read_json(path / STATE_FILE) or {}
            if state.get("spawns", 0) > 0:
                return state
            if state and not supervisor_alive(path, state):
                break
            time.sleep(0.02)
        self._remove(path)
        raise Transient(
            f"{describe(workload)}: supervisor did not start within {self.start_timeout:g}s"
            f" (see {path.name}/supervisor.log)"
        )

    def _remove(self, path: Path) -> None:
        state = read_json(path / STATE_FILE) or {}
        if supervisor_alive(path, state):
            pid = int(state["supervisorPid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + self.grace + 5.0
            while supervisor_alive(path, state) and time.monotonic() < deadline:
                time.sleep(0.02)
            if supervisor_alive(path, state):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            state = read_json(path / STATE_FILE) or state
        # A supervisor killed by power loss or SIGKILL leaves its command behind: take its group down too,
        # but only when the pid still is that very process (start time matches) and leads its own group.
        if child_alive(state):
            child = int(state["childPid"])
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(child) == child:
                    os.killpg(child, signal.SIGKILL)
        trash = self.root / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
            fsync_dir(self.root)
            shutil.rmtree(trash, ignore_errors=True)

    def _observe_dir(self, path: Path, spec: Mapping[str, Any]) -> Observed:
        # A supervisor launched just before a crash may still be starting: give it its start timeout.
        deadline = float(spec.get("createdAt") or 0.0) + self.start_timeout
        while not (path / STATE_FILE).exists() and time.time() < deadline:
            time.sleep(0.05)
        state = settled_state(path)
        notes = []
        if spec.get("gpus") not in (None, 0, "0"):
            notes.append("gpus hint ignored: the process runtime cannot assign GPUs")
        memory = cpu = None
        if not supervisor_alive(path, state):
            status = "exited"
            notes.insert(0, "supervisor not running" + last_exit(state))
        elif child_alive(state):
            status = "running"
            memory = vm_rss(int(state["childPid"]))
            cpu = cpu_percent(int(state["childPid"]))
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
