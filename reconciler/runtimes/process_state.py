"""Reading a workload's processes: whether the pids in ``state.json`` still are the supervisor and command
it recorded (start time and command line must match, so a reused pid is never trusted or signalled), how the
command last exited, and what the running command uses (CPU, memory, from ``/proc``).

Kept apart from ``process.py``: these are reads with no side effect, shared by observe, health and stop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.runtimes.supervisor import MODULE, STATE_FILE, proc_start_ticks, read_json


def supervisor_alive(path: Path, state: Mapping[str, Any]) -> bool:
    pid = int(state.get("supervisorPid") or 0)
    ticks = proc_start_ticks(pid)
    if ticks is None or ticks != state.get("supervisorStart"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in cmdline and str(path).encode() in cmdline


def settled_state(path: Path, patience: float = 1.0) -> dict[str, Any]:
    """The state file, read again for a moment when the command just died and its live supervisor has not
    yet recorded how (so a report says "exited with code 3" rather than "not running")."""
    deadline = time.monotonic() + patience
    while True:
        state = read_json(path / STATE_FILE) or {}
        if state.get("phase") != "running" or child_alive(state) or time.monotonic() >= deadline:
            return state
        if not supervisor_alive(path, state):
            return state
        time.sleep(0.02)


def child_alive(state: Mapping[str, Any]) -> bool:
    pid = int(state.get("childPid") or 0)
    return pid > 0 and proc_start_ticks(pid) == state.get("childStart")


def last_exit(state: Mapping[str, Any]) -> str:
    code = state.get("lastExitCode")
    return "" if code is None else f" (last exit code {code})"


def cpu_percent(pid: int) -> float | None:
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


def vm_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
