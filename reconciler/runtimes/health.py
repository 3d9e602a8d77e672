"""Health checks shared by the runtimes: an HTTP probe and an "still alive after N seconds" watch.

Both poll until a verdict and return a ``HealthResult`` whose message says why a check failed (HTTP status,
connection refused, exit code), so the status branch can show it without anyone logging in to the device.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from reconciler.model import HealthResult

# A probe returns None while the workload is fine, else the reason it is not (e.g. "exited with code 1").
Probe = Callable[[], str | None]


def http_get_status(url: str, timeout: float) -> int:
    """One GET; returns the status code.  Raises OSError (refused, reset, timeout) or http.client errors.

    http.client rather than urllib: urllib honours ``http_proxy`` from the environment, and a health check of
    a process on 127.0.0.1 must never go through a proxy.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"health check URL must be http://host[:port]/path, got {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request("GET", target, headers={"User-Agent": "edge-reconciler-health"})
        response = conn.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, http.client.HTTPException):
        return f"bad HTTP response ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def http_check(url: str, timeout: float, interval: float = 0.2, probe: Probe | None = None) -> HealthResult:
    """GET ``url`` until it answers 2xx or ``timeout`` seconds pass.

    ``probe`` (optional) is asked between attempts whether the workload still runs; its reason is added to the
    failure message, so "connection refused" comes with "exited with code 1" when the process died.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "no attempt made"
    while True:
        remaining = deadline - time.monotonic()
        try:
            status = http_get_status(url, timeout=max(0.1, min(2.0, remaining)))
        except (OSError, http.client.HTTPException) as exc:
            last = _describe(exc)
        else:
            if 200 <= status < 300:
                return HealthResult(True, f"GET {url}: HTTP {status}", time.monotonic() - start)
            last = f"HTTP {status}"
        if time.monotonic() + interval >= deadline:
            break
        time.sleep(interval)
    reason = probe() if probe is not None else None
    message = f"GET {url}: {last} after {timeout:g}s"
    if reason:
        message += f"; {reason}"
    return HealthResult(False, message, time.monotonic() - start)


def alive_check(probe: Probe, seconds: float, interval: float = 0.1) -> HealthResult:
    """Healthy when ``probe`` reports nothing wrong for ``seconds`` in a row; fails at the first reason."""
    start = time.monotonic()
    deadline = start + seconds
    while True:
        reason = probe()
        if reason:
            return HealthResult(False, reason, time.monotonic() - start)
        now = time.monotonic()
        if now >= deadline:
            return HealthResult(True, f"alive for {seconds:g}s", now - start)
        time.sleep(min(interval, deadline - now))
