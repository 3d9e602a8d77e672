"""Registry mirrors (``registries.<name>.mirrors`` in fleet.yaml, containerd's ``hosts.toml`` idea): pulls try
each mirror in order, then the registry itself.

Mirrors are untrusted and anonymous.  Only what a digest pins goes through them (a pinned manifest, blobs), so
a mirror that lies is caught by the digest check like a broken download and the next source is tried; a tag
is always resolved at the registry.  The device's registry credential is never sent to a mirror: a site's
pull-through cache holds the upstream credential itself.  Each mirror gets one attempt (no retries, the
caller's deadline): a mirror that is down costs one refused connection, then the origin is asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Generic, TypeVar

from reconciler.artifacts.reference import Reference
from reconciler.errors import ReconcilerError
from reconciler.model import RegistryConfig

log = logging.getLogger("reconciler.artifacts")
T = TypeVar("T")
C = TypeVar("C")  # the registry client (generic here: registry.py imports this module)


def mirror_config(origin: RegistryConfig, address: str) -> RegistryConfig:
    """A mirror ``host[:port]`` of ``origin``: no credential; HTTP on loopback, else HTTPS with system CAs."""
    host, _, port = address.rpartition(":") if address.count(":") == 1 else (address, "", "")
    return RegistryConfig(alias=f"{origin.alias} mirror {address}", host=host or address,
                          port=int(port) if port.isdigit() else None)


class Mirrors(Generic[C]):
    """The mirrors of one registry, each with its own anonymous client."""

    def __init__(self, origin: RegistryConfig | None, make_client: Callable[[RegistryConfig], C]) -> None:
        self.origin = origin
        self._clients = [(m, make_client(mirror_config(origin, m))) for m in origin.mirrors] if origin else []
        self.served: dict[str, str] = {}  # digest -> the mirror that served it, for the log and tests
        self.failures: list[str] = []  # "mirror: why", most recent last

    def _candidates(self, ref: Reference) -> Iterator[tuple[str, C, Reference]]:
        if self.origin is None or ref.registry != self.origin.address:
            return
        for address, client in self._clients:
            yield address, client, replace(ref, registry=address)

    def first(self, ref: Reference, digest: str | None, attempt: Callable[[C, Reference], T],
              cleanup: Callable[[], None] | None = None) -> tuple[bool, T | None]:
        """``attempt`` through each mirror in order; (True, result) from the first that succeeds, else (False,
        None) after every mirror failed (the caller then asks the registry).  Only for pinned content."""
        if digest is None:
            return False, None
        for address, client, mirrored in self._candidates(ref):
            try:
                result = attempt(client, mirrored)
            except ReconcilerError as exc:
                reason = str(exc).splitlines()[0]
                self.failures.append(f"{address}: {reason}")
                log.warning("registry mirror %s failed for %s, trying the next source: %s", address, digest, reason)
                if cleanup is not None:
                    cleanup()  # bytes from a failed mirror are not resumed from elsewhere
                continue
            self.served[digest] = address
            return True, result
        return False, None


def drop(path: Path) -> Callable[[], None]:
    return lambda: path.unlink(missing_ok=True)
