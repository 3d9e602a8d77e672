"""systemd's notify protocol (sd_notify(3)): one datagram per message on the unix socket ``$NOTIFY_SOCKET``.

Twenty lines of our own rather than a library: the protocol is a datagram of ``KEY=VALUE`` lines, the one
maintained Python binding (systemd-python) needs libsystemd headers to build, and the pure-Python package
(sdnotify) has not been released since 2017.  Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Mapping

from reconciler.agent.liveness import Liveness


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: its first byte is NUL
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_seconds = _watchdog_seconds(environ)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, **fields: str) -> bool:
        """``send(READY="1", STATUS="...")``; False when not under systemd or the socket is gone."""
        if not self.address:
            return False
        message = "\n".join(f"{k}={v.replace(chr(10), ' ')}" for k, v in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._sock.connect(self.address)
                self._sock.sendall(message)
            except OSError:
                self._close()
                return False
        return True

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def _watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """``WatchdogSec=`` as systemd passes it (``WATCHDOG_USEC``), when it is meant for this process."""
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6


class Watchdog(threading.Thread):
    """Sends ``WATCHDOG=1`` at half the watchdog interval, but only while ``liveness`` says the loop is alive:
    a pass that hangs past its deadline stops the pings, and systemd restarts the service."""

    def __init__(self, notifier: Notifier, liveness: Liveness, interval: float | None = None,
                 on_stall: Callable[[float], None] | None = None) -> None:
        super().__init__(daemon=True, name="watchdog")
        self.notifier = notifier
        self.liveness = liveness
        self.interval = interval if interval is not None else (notifier.watchdog_seconds or 0) / 2
        self.on_stall = on_stall
        self.stopped = threading.Event()

    def run(self) -> None:
        stalled = False
        while not self.stopped.wait(self.interval):
            if self.liveness.alive():
                self.notifier.send(WATCHDOG="1")
                stalled = False
            elif not stalled and self.on_stall is not None:
                stalled = True
                self.on_stall(self.liveness.busy_for() or 0.0)

    def stop(self) -> None:
        self.stopped.set()
