"""The streaming blob sink: hashes and writes a download's chunks on two threads while the socket is read.

Kept apart from ``registry`` because it is plain threading and file I/O, with no HTTP in it; the
registry's download loop only puts chunks into it and closes it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

from reconciler.durable import start_writeback

WRITEBACK_BYTES = 16 * 1024 * 1024


class BlobSink:
    """Hashes chunks on one thread and writes them on another while the caller reads the socket.

    hashlib, file writes and socket reads all release the GIL, so the three overlap; each queue is
    bounded, so at most a few chunks are held in memory.  The writer starts the kernel's writeback
    every WRITEBACK_BYTES, so the final fsync of a large blob has little left to do."""

    def __init__(self, file: Any, hasher: Any, offset: int) -> None:
        self._file, self._hasher = file, hasher
        self._written = self._flushed = offset
        self._error: BaseException | None = None
        self._queues: list[queue.Queue[bytes | None]] = [queue.Queue(maxsize=4), queue.Queue(maxsize=4)]
        self._threads = [
            threading.Thread(target=self._drain, args=(self._queues[0], self._hash), name="blob-hash",
                             daemon=True),
            threading.Thread(target=self._drain, args=(self._queues[1], self._write), name="blob-write",
                             daemon=True),
        ]
        self._closed = False

    def __enter__(self) -> BlobSink:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _hash(self, chunk: bytes) -> None:
        self._hasher.update(chunk)

    def _write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._written += len(chunk)
        if self._written - self._flushed >= WRITEBACK_BYTES:
            self._file.flush()
            start_writeback(self._file.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def _drain(self, chunks: queue.Queue[bytes | None], step: Callable[[bytes], None]) -> None:
        while (chunk := chunks.get()) is not None:
            if self._error is None:
                try:
                    step(chunk)
                except BaseException as error:  # re-raised in the reading thread
                    self._error = error

    def put(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        for chunks in self._queues:
            chunks.put(chunk)

    def close(self) -> None:
        """Wait until every chunk is hashed and written; re-raise a failure of either."""
        if not self._closed:
            self._closed = True
            for chunks in self._queues:
                chunks.put(None)
            for thread in self._threads:
                thread.join()
        if self._error is not None:
            raise self._error
