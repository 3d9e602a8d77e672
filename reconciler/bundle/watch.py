"""``offline.watch``: the agent applies any bundle that appears in a directory (a mount point), between its
passes, and writes ``status-<device>.tar`` there.

The loop's before-pass hook looks at the directory before every pass (one scandir), so a medium mounted over
the directory is seen at the next pass even though an inotify watch on a mount point sees nothing of the
mounted file system; a watchfiles thread wakes the loop early when the directory itself changes.  A file is
tried once per (size, mtime): a bundle still being copied fails as truncated and is tried again when
the copy completes, and one refused (already applied, older, tampered) is not retried until it changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from reconciler.agent.loop import Agent
from reconciler.bundle.apply import apply_bundle
from reconciler.bundle.statusfile import file_name
from reconciler.errors import ReconcilerError

log = logging.getLogger("reconciler.bundle")
SUFFIXES = (".tar", ".tar.zst")


class OfflineWatch:
    def __init__(self, agent: Agent, directory: Path) -> None:
        self.agent = agent
        self.directory = directory
        self.tried: dict[str, tuple[int, int]] = {}

    def attach(self) -> None:
        self.agent.before_pass.append(self.apply_new)
        self.agent.threads.append(threading.Thread(target=self._watch, daemon=True, name="watch-offline"))

    def candidates(self) -> list[Path]:
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError:
            return []  # not mounted: nothing to do
        status = file_name(self.agent.config.device)
        return [Path(e.path) for e in entries if e.is_file() and e.name.endswith(SUFFIXES)
                and not e.name.startswith((".", "status-")) and e.name != status]

    def apply_new(self) -> None:
        for path in self.candidates():
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_size, st.st_mtime_ns)
            if self.tried.get(path.name) == stamp:
                continue
            self.tried[path.name] = stamp
            try:
                result = apply_bundle(self.agent.reconciler, path, status_dir=self.directory,
                                      allowed_signers=self.agent.config.allowed_signers)
            except ReconcilerError as exc:
                log.warning("bundle %s not applied: %s", path, str(exc).splitlines()[0])
                continue
            m = result.manifest
            log.info("bundle %s applied: sequence %d, %s@%s, %s", path, m.sequence, m.branch, m.commit[:12],
                     "Ready" if result.cycle.ready else "not ready")

    def _watch(self) -> None:
        from watchfiles import watch

        while not self.agent.stop.is_set():
            # watching is an optimisation (the next pass looks anyway): a directory that is missing, or goes
            # away with its medium, is watched again a little later
            with contextlib.suppress(Exception):
                for _ in watch(self.directory, stop_event=self.agent.stop, rust_timeout=1000,
                               yield_on_timeout=False, debounce=1000, recursive=False):
                    self.agent.wake.set()
            self.agent.stop.wait(5.0)
