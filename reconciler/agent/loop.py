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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from reconciler.agent import config as agentconfig
from reconciler.agent.config import AgentConfig
from reconciler.agent.cycle import Cycle
from reconciler.agent.liveness import Liveness
from reconciler.agent.reconcile import Reconciler
from reconciler.errors import LockHeld, ReconcilerError, Stalled, Unexpected

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
        self.config_changed = threading.Event()
        self.failures = 0
        self.liveness = Liveness(config.pass_timeout)
        # called with each finished pass (service status line, metrics, the local API's view); never raise
        self.observers: list[Callable[[Cycle, float], None]] = []
        # called before each pass, and threads started with the loop: capabilities above the agent hook in
        # here (bundle/watch.py for offline.watch), wired by commands/agent.py
        self.before_pass: list[Callable[[], None]] = []
        self.threads: list[threading.Thread] = []

    def run_pass(self) -> Cycle:
        """One pass, timed and marked for the watchdog, then handed to the observers."""
        started = time.monotonic()
        self.liveness.begin()
        try:
            cycle = self.reconciler.run_once()
        except ReconcilerError as exc:  # reporting itself failed (a full disk while saving state)
            log.error("pass failed while reporting: %s", exc)
            cycle = Cycle(error=exc)
        except Exception as exc:  # a bug must not end the loop that keeps the models running
            log.exception("pass failed")
            cycle = Cycle(error=Unexpected(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self.liveness.end()
        seconds = time.monotonic() - started
        for observer in self.observers:
            try:
                observer(cycle, seconds)
            except Exception:  # an observer's bug must not stop the loop that runs the models
                log.exception("pass observer %r failed", observer)
        return cycle

    def run_hooks(self) -> None:
        for hook in self.before_pass:
            try:
                hook()
            except Exception:  # like an observer's: a hook's bug must not stop the loop that runs the models
                log.exception("before-pass hook %r failed", hook)

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
        for watcher in [*self._watchers(), *self.threads]:
            watcher.start()
        cycle = None
        while not self.stop.is_set():
            self.wake.clear()
            if self.config_changed.is_set():
                self.config_changed.clear()
                self.reload()
            self.run_hooks()
            cycle = self.run_pass()
            wait = self.next_wait(cycle)
            log.info("next cycle in %.1fs", wait)
            self.wake.wait(wait)
        return 0 if cycle is None or cycle.ready else 1

    def reload(self) -> bool:
        """Take up an edited configuration file; a file that does not load leaves the running one in place."""
        if self.config.path is None:
            return False
        try:
            config = agentconfig.load(self.config.path)
        except ReconcilerError as exc:
            log.error("%s; keeping the configuration loaded before\n%s", exc,
                      "\n".join(p.format() for p in getattr(exc, "problems", [])))
            return False
        if (config.device, config.data_dir) != (self.config.device, self.config.data_dir):
            log.error("%s: device and dataDir take effect at the next start (this agent holds the lock on %s)",
                      self.config.path, self.config.data_dir)
            return False
        if config != self.config:
            log.info("%s changed: using the new configuration", self.config.path)
            self.config = config
            self.reconciler = Reconciler(config)
        return True

    def _watchers(self) -> list[threading.Thread]:
        """Threads that wake the loop: one on the config file, one on a local fleet repository."""
        threads = []
        if self.config.path is not None:
            # The file's directory, not the file: an editor that saves by renaming a new file over the old
            # one would leave a watch on the file itself looking at a deleted inode.
            config = os.path.realpath(self.config.path)
            threads.append(threading.Thread(
                target=self._watch, args=(os.path.dirname(config), False, lambda p: p == config, True),
                daemon=True, name="watch-config"))
        repo = self.config.local_repo_path()
        if repo is not None and repo.exists():
            threads.append(threading.Thread(
                target=self._watch, args=(os.path.realpath(repo), True, lambda p: True, False),
                daemon=True, name="watch-repo"))
        return threads

    def _watch(self, path: str, recursive: bool, match: Callable[[str], bool], is_config: bool) -> None:
        from watchfiles import watch

        with contextlib.suppress(Exception):  # watching is an optimisation; the interval still applies
            for _ in watch(path, stop_event=self.stop, rust_timeout=1000, yield_on_timeout=False, debounce=500,
                           recursive=recursive, watch_filter=lambda _change, changed: match(changed)):
                log.info("%s changed: reconciling now", "configuration" if is_config else "fleet repository")
                if is_config:
                    self.config_changed.set()
                self.wake.set()
