"""The docker runtime's link to the daemon: finding it, connecting once, and translating SDK exceptions.

The daemon is found as the docker CLI finds it: the ``dockerHost`` option, else ``DOCKER_HOST``, else the
default socket.  Every call the runtime makes goes through ``translate``, so nothing from ``docker`` or
``requests`` leaks to the caller, and every message is masked with the registry secrets seen so far.  Kept
apart from ``docker.py`` so the runtime reads as the Runtime protocol and this error mapping reads as one table.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from reconciler.credentials import mask
from reconciler.errors import (
    AuthError,
    DaemonUnreachable,
    NotFound,
    ReconcilerError,
    RuntimeUnavailable,
    Stalled,
    Transient,
)


class DockerConnection:
    def __init__(self, host: str | None, connect_timeout: float, api_timeout: float) -> None:
        self.host = host
        self.connect_timeout = connect_timeout
        self.api_timeout = api_timeout
        self._client: Any = None
        # Registry secrets handed to the daemon so far: masked out of every message we pass on.
        self.secrets: tuple[str, ...] = ()

    def _where(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"

    def client(self) -> Any:
        """A connected client; ``DaemonUnreachable`` (transient: a daemon restarting or started after the agent
        comes back) within ``connectTimeout`` when no daemon answers."""
        if self._client is not None:
            return self._client
        import docker
        import requests

        try:
            if self.host:
                client = docker.DockerClient(base_url=self.host, version="auto", timeout=self.connect_timeout)
            else:
                client = docker.from_env(version="auto", timeout=self.connect_timeout)
            client.ping()
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise DaemonUnreachable(
                f"runtime docker: no Docker daemon answers at {self._where()} ({type(exc).__name__}); "
                "start dockerd, or set dockerHost in the agent configuration, or use runtime: process"
            ) from None
        client.api.timeout = self.api_timeout
        self._client = client
        return client

    @contextlib.contextmanager
    def translate(self, what: str) -> Iterator[None]:
        import docker
        import requests

        try:
            yield
        except ReconcilerError:
            raise
        except docker.errors.ImageNotFound as exc:
            raise NotFound(f"{what}: image not found: {self._explain(exc)}") from None
        except docker.errors.NotFound as exc:
            raise NotFound(f"{what}: {self._explain(exc)}") from None
        except docker.errors.APIError as exc:
            raise self._api_error(what, exc) from None
        except (requests.ConnectionError, ConnectionError) as exc:
            # The daemon answered before and went away (restart?): reconnect next time.
            self._client = None
            raise Transient(f"{what}: lost the Docker daemon connection ({type(exc).__name__})") from None
        except requests.Timeout:
            raise Transient(f"{what}: the Docker daemon gave no answer in {self.api_timeout:g}s") from None
        except docker.errors.DockerException as exc:
            raise Stalled(f"{what}: {self._explain(exc)}") from None

    def _explain(self, exc: Exception) -> str:
        text = str(getattr(exc, "explanation", None) or exc)
        return mask(text, self.secrets)

    def _api_error(self, what: str, exc: Any) -> ReconcilerError:
        text = self._explain(exc)
        lower = text.lower()
        status = exc.status_code or 0
        if "could not select device driver" in lower:
            return RuntimeUnavailable(
                f"{what}: resources.gpus asks for GPUs, but this Docker daemon has no GPU runtime ({text})"
            )
        if status in (401, 403) or "unauthorized" in lower or "authentication required" in lower:
            return AuthError(f"{what}: the registry refused our credentials: {text}")
        if status == 404 or "manifest unknown" in lower or "not found" in lower:
            return NotFound(f"{what}: {text}")
        if status >= 500 or status == 0:
            return Transient(f"{what}: Docker daemon error: {text}")
        return Stalled(f"{what}: Docker refused the request: {text}")
