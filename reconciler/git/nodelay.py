"""TCP_NODELAY for the sockets libgit2 opens, which it leaves with Nagle's algorithm on.

libssh2 writes two small SSH packets back to back during its handshake (KEX init, then new-keys plus the
service request).  With Nagle on, the second waits for the server to ACK the first, and the server delays
that ACK (40 ms on Linux, up to 200 ms elsewhere): two such stalls cost about 80 ms of a 155 ms no-op
fetch from a local gitolite.  OpenSSH, curl and most clients set TCP_NODELAY; libgit2 1.9 gives no way to
ask for it and creates the socket in C.  So while a git operation connects, a short-lived thread watches
this process's descriptors and sets the option on the new TCP socket to the remote's port.  It is only an
optimisation: a socket it misses behaves as before, and it stops once the socket is found, when the
operation ends, or after WATCH_SECONDS.  Linux only (it reads /proc/self/fd); elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

FD_DIR = "/proc/self/fd"
WATCH_SECONDS = 10.0
FAST_POLL_SECONDS = 0.0005  # first FAST_PHASE_SECONDS: a local server answers the TCP connect in ~0.1 ms
SLOW_POLL_SECONDS = 0.005
FAST_PHASE_SECONDS = 0.05


def _sockets() -> dict[int, str]:
    """Descriptor -> "socket:[inode]" for every socket this process holds."""
    found: dict[int, str] = {}
    try:
        names = os.listdir(FD_DIR)
    except OSError:
        return found
    for name in names:
        with contextlib.suppress(OSError, ValueError):
            link = os.readlink(f"{FD_DIR}/{name}")
            if link.startswith("socket:"):
                found[int(name)] = link
    return found


def _set_if_ours(fd: int, port: int) -> bool:
    """Set TCP_NODELAY on ``fd`` if it is a TCP socket connected to ``port``; True when it was."""
    try:
        sock = socket.socket(fileno=os.dup(fd))  # a duplicate: closing it leaves libgit2's descriptor open
    except OSError:
        return False
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        if sock.getpeername()[1] != port:
            return False
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    except OSError:  # not connected yet, or gone: look again on the next pass
        return False
    finally:
        sock.close()


class _Watcher:
    def __init__(self, port: int) -> None:
        self.port = port
        self.known = _sockets()
        self.done = threading.Event()
        self.found = False
        self.thread = threading.Thread(target=self._run, name="tcp-nodelay", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self.done.is_set():
            for fd, link in _sockets().items():
                if self.known.get(fd) == link:
                    continue
                if _set_if_ours(fd, self.port):
                    self.found = True
                    return
            elapsed = time.monotonic() - started
            if elapsed > WATCH_SECONDS:
                return
            self.done.wait(FAST_POLL_SECONDS if elapsed < FAST_PHASE_SECONDS else SLOW_POLL_SECONDS)


@contextlib.contextmanager
def tcp_nodelay(port: int) -> Iterator[_Watcher | None]:
    """Around one libgit2 network operation to ``port``: set TCP_NODELAY on the socket it opens."""
    if not os.path.isdir(FD_DIR):
        yield None
        return
    watcher = _Watcher(port)
    watcher.thread.start()
    try:
        yield watcher
    finally:
        watcher.done.set()
        watcher.thread.join()
