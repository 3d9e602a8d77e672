"""The agent loop: one reconcile pass per interval (plus a jitter derived from the device name), at once when
the configuration file or a local fleet repository changes, with backoff on transient errors; one agent per
data dir; SIGTERM ends it between passes, state saved."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from reconciler.agentconfig import AgentConfig
from reconciler.errors import LockHeld, Stalled
from reconciler.reconcile import Cycle, Reconciler

log = logging.getLogger("reconciler.agent")
BACKOFF_START = 5.0


def jitter_fraction(device: str) -> float:
    """The same device always waits the same share of the jitter; a fleet spreads over the whole window."""
    return int.from_bytes(hashlib.sha256(device.encode()).digest()[:4], "big") / 2**32


@contextlib.contextmanager
def single_instance(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "agent.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"another agent is running on {data_dir} (lock {path})", retry_after=60) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.reconciler = Reconciler(config)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.failures = 0

    def next_wait(self, cycle: Cycle) -> float:
        settings = cycle.desired.settings if cycle.desired else {}
        interval = float(self.config.interval or settings.get("interval", 60.0))
        jitter = float(self.config.jitter if self.config.jitter is not None else settings.get("jitter", 30.0))
        base = interval + jitter * jitter_fraction(self.config.device)
        err = cycle.error
        if err is None or isinstance(err, Stalled):
            # terminal errors wait for a new commit at the normal pace: retrying sooner cannot help
            self.failures = 0
            return base
        self.failures += 1
        retry_after = getattr(err, "retry_after", None)
        if retry_after:
            return float(retry_after)
        return min(base, BACKOFF_START * 2.0 ** (self.failures - 1)) + jitter_fraction(self.config.device)

    def run(self) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current step", signum)
            self.stop.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        watcher = threading.Thread(target=self._watch, daemon=True, name="watch")
        watcher.start()
        cycle = None
        while not self.stop.is_set():
            self.wake.clear()
            cycle = self.reconciler.run_once()
            wait = self.next_wait(cycle)
            log.info("next cycle in %.1fs", wait)
            self.wake.wait(wait)
        return 0 if cycle is None or cycle.ready else 1

    def _watch(self) -> None:
        paths = [p for p in (self.config.path, self.config.local_repo_path()) if p is not None and p.exists()]
        if not paths:
            return
        from watchfiles import watch

        with contextlib.suppress(Exception):  # watching is an optimisation; the interval still applies
            for _ in watch(*paths, stop_event=self.stop, rust_timeout=1000, yield_on_timeout=False,
                           debounce=500):
                log.info("change on disk: reconciling now")
                self.wake.set()
