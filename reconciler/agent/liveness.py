"""Whether the loop makes progress.  The systemd watchdog pings and ``/healthz`` answer from it.

The loop is alive while it waits between passes, and during a pass until ``deadline`` seconds after the pass
began.  A pass that hangs (a fetch that never returns, a deadlock) makes the loop dead once the deadline
passes; the watchdog stops pinging and systemd restarts the agent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Liveness:
    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self._clock = clock
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self.passes = 0

    def begin(self) -> None:
        with self._lock:
            self._busy_since = self._clock()

    def end(self) -> None:
        with self._lock:
            self._busy_since = None
            self.passes += 1

    def busy_for(self) -> float | None:
        """Seconds the current pass has run, None between passes."""
        with self._lock:
            since = self._busy_since
        return None if since is None else self._clock() - since

    def alive(self) -> bool:
        busy = self.busy_for()
        return busy is None or busy < self.deadline
