"""The per-workload supervisor: ``python -m reconciler.runtimes.supervisor STATE_DIR``.

It detaches (double fork, its own session), so it outlives ``reconciler agent --once`` and the next agent
adopts it from its state dir.  It runs the command in ``STATE_DIR/spec.json`` in a process group of its own,
restarts it with exponential backoff, copies its output into a size-capped log, forwards SIGHUP to it (reload)
and on SIGTERM stops the whole group (SIGTERM, then SIGKILL after a grace period) and exits.

Everything the runtime needs to know is in ``STATE_DIR/state.json``, replaced atomically on every change.
This module imports only the standard library: it is started once per workload and must stay light.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.durable import fsync_dir, write_atomic

SPEC_FILE = "spec.json"
STATE_FILE = "state.json"
LOG_FILE = "output.log"
OLD_LOG_FILE = "output.log.1"
SECRET_ENV_PREFIX = "RECONCILER_WORKLOAD_SECRET_"  # the agent hands secrets over in our environment, not on disk

MODULE = "reconciler.runtimes.supervisor"
__all__ = ["fsync_dir", "read_json", "write_json_atomic"]


def write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(doc, sort_keys=True, indent=1).encode())


def secret_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The workload's secret variables, from the supervisor's own environment."""
    return {k[len(SECRET_ENV_PREFIX):]: v for k, v in environ.items() if k.startswith(SECRET_ENV_PREFIX)}


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when it is gone or a zombie.

    Recorded next to every pid we write down: a pid can be reused after a reboot or a crash, the pair
    (pid, start time) cannot.
    """
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


class Supervisor:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        spec = read_json(state_dir / SPEC_FILE)
        if spec is None:
            raise SystemExit(f"supervisor: cannot read {state_dir / SPEC_FILE}")
        self.spec = spec
        opts = spec.get("supervisor", {})
        self.backoff_initial = float(opts.get("backoff", 1.0))
        self.backoff_max = float(opts.get("backoffMax", 60.0))
        self.reset_after = float(opts.get("resetAfter", 30.0))
        self.grace = float(opts.get("stopGrace", 10.0))
        self.log_max = int(opts.get("logMaxBytes", 1 << 20))
        self.child: subprocess.Popen[bytes] | None = None
        self.pipe: int | None = None
        self.pending: list[int] = []
        self.backoff = self.backoff_initial
        self.next_start = time.time()
        self.log_fd = self._open_log()
        self.state: dict[str, Any] = {
            "supervisorPid": os.getpid(),
            "supervisorStart": proc_start_ticks(os.getpid()),
            "childPid": 0,
            "childStart": None,
            "startedAt": 0.0,
            "restarts": 0,
            "spawns": 0,
            "lastExitCode": None,
            "lastError": "",
            "phase": "starting",
        }

    # -- output log ------------------------------------------------------------------------------------
    def _open_log(self) -> int:
        return os.open(self.dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _log(self, data: bytes) -> None:
        # Two halves of the cap: the current file and one previous generation, so a tail survives a rotation.
        half = max(1, self.log_max // 2)
        while data:
            room = half - os.fstat(self.log_fd).st_size
            if room <= 0:
                os.close(self.log_fd)
                os.replace(self.dir / LOG_FILE, self.dir / OLD_LOG_FILE)
                self.log_fd = self._open_log()
                continue
            try:
                os.write(self.log_fd, data[:room])
            except OSError:  # disk full: drop output rather than stall or kill the command
                return
            data = data[room:]

    def _note(self, text: str) -> None:
        self._log(f"[supervisor {time.strftime('%Y-%m-%dT%H:%M:%S')}] {text}\n".encode())

    def _drain(self) -> None:
        while self.pipe is not None:
            ready, _, _ = select.select([self.pipe], [], [], 0)
            if not ready:
                return
            chunk = os.read(self.pipe, 65536)
            if not chunk:
                os.close(self.pipe)
                self.pipe = None
                return
            self._log(chunk)

    # -- state -----------------------------------------------------------------------------------------
    def _save(self, **changes: Any) -> None:
        self.state.update(changes, updatedAt=time.time())
        # A full disk must not take the model down with its supervisor: the runtime then reads an older
        # state, and the pid/start-time checks keep that from misleading it.
        with contextlib.suppress(OSError):
            write_json_atomic(self.dir / STATE_FILE, self.state)

    # -- the child -------------------------------------------------------------------------------------
    def _preexec(self) -> None:
        cpus = self.spec.get("cpuAffinity")
        if cpus:
            os.sched_setaffinity(0, cpus)
        limit = self.spec.get("memoryLimitBytes")
        if limit:
            resource.setrlimit(resource.RLIMIT_DATA, (int(limit), int(limit)))

    def _spawn(self) -> None:
        if self.pipe is not None:  # output of the previous run's leftovers
            os.close(self.pipe)
            self.pipe = None
        read_end, write_end = os.pipe()
        self.state["spawns"] += 1
        restarts = self.state["spawns"] - 1
        try:
            self.child = subprocess.Popen(
                self.spec["argv"],
                cwd=self.spec["cwd"],
                env={**self.spec["env"], **secret_env(os.environ)},
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                process_group=0,
                preexec_fn=self._preexec,
            )
        except OSError as exc:
            os.close(read_end)
            self.child = None
            reason = f"cannot execute {self.spec['argv'][0]!r}: {exc.strerror or exc}"
            self._note(reason)
            self._schedule_restart(0.0, 127, reason, restarts=restarts, spawnError=reason)
            return
        finally:
            os.close(write_end)
        os.set_blocking(read_end, False)
        self.pipe = read_end
        self._save(
            childPid=self.child.pid,
            childStart=proc_start_ticks(self.child.pid),
            startedAt=time.time(),
            restarts=restarts,
            spawnError="",
            phase="running",
        )

    def _schedule_restart(self, uptime: float, code: int, reason: str, **changes: Any) -> None:
        if uptime >= self.reset_after:
            self.backoff = self.backoff_initial
        delay = self.backoff
        self.backoff = min(self.backoff * 2, self.backoff_max)
        self.next_start = time.time() + delay
        self._save(
            childPid=0,
            childStart=None,
            lastExitCode=code,
            lastError=reason,
            phase="backoff",
            nextRestartAt=self.next_start,
            **changes,
        )

    def _reap(self) -> None:
        if self.child is None or self.child.poll() is None:
            return
        code = self.child.returncode
        pid = self.child.pid
        self.child = None
        # What the child left behind in its group (a backgrounded helper) must not outlive it and hold
        # its port against the restart.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self._drain()
        exit_code = code if code >= 0 else 128 - code
        how = f"exited with code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
        self._note(f"process {pid} {how}")
        self._schedule_restart(time.time() - float(self.state["startedAt"]), exit_code, how)

    def _stop_child(self) -> None:
        child = self.child
        if child is None:
            return
        self._save(phase="stopping")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGTERM)
        deadline = time.time() + self.grace
        while child.poll() is None and time.time() < deadline:
            self._drain()
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        self._drain()
        self.child = None

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, lambda signum, _frame: self.pending.append(signum))
        self._save()
        while True:
            # A state dir removed by hand means nobody can find us any more: stop rather than linger unseen.
            orphaned = not (self.dir / SPEC_FILE).exists()
            for signum in self._take_signals() + ([signal.SIGTERM] if orphaned else []):
                if signum in (signal.SIGTERM, signal.SIGINT):
                    self._stop_child()
                    self._note("stopped")
                    self._save(childPid=0, childStart=None, phase="stopped")
                    return 0
                if signum == signal.SIGHUP and self.child is not None:
                    with contextlib.suppress(ProcessLookupError):
                        self.child.send_signal(signal.SIGHUP)
            self._reap()
            if self.child is None and time.time() >= self.next_start:
                self._spawn()
                continue
            timeout = 1.0 if self.child is not None else max(0.0, min(1.0, self.next_start - time.time()))
            fds = [wake_r] + ([self.pipe] if self.pipe is not None else [])
            ready, _, _ = select.select(fds, [], [], timeout)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            if self.pipe is not None and self.pipe in ready:
                chunk = os.read(self.pipe, 65536)
                if chunk:
                    self._log(chunk)
                else:
                    os.close(self.pipe)
                    self.pipe = None

    def _take_signals(self) -> list[int]:
        taken, self.pending = self.pending, []
        return taken


def _detach() -> None:
    """Double fork: the agent's Popen reaps the first child at once; the supervisor belongs to init."""
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(f"usage: python -m {MODULE} STATE_DIR", file=sys.stderr)
        return 2
    state_dir = Path(argv[0])
    _detach()
    supervisor = Supervisor(state_dir)
    try:
        return supervisor.run()
    finally:
        # Even when the supervisor itself fails (its state dir deleted under it), the command must not be
        # left running with nobody to stop or restart it.
        if supervisor.child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(supervisor.child.pid, signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
