"""The ``docker`` runtime: one container per model version, through the docker SDK.

Containers carry our labels (device, model, version, spec hash, and the settings we gave them) so that
``observe`` finds them after an agent restart and never sees a container someone else started.  Host ports
are the model's own ``port`` on ``publishAddress`` (fixed, as Wallaroo's EDGE_PORT): a new version of a model with
a port starts after the old one stopped, and the old one comes back should the new one fail.

Beside this module: ``docker_connection`` (finding the daemon, SDK exceptions translated there; nothing from
``docker`` leaks to the caller), ``docker_spec`` (workload -> container arguments and labels) and
``docker_observation`` (container -> ``Observed``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reconciler.credentials import CredentialStore, mask, storage_env
from reconciler.errors import InvalidConfig, NotFound, ReconcilerError, Stalled
from reconciler.model import HealthResult, Observed, Workload
from reconciler.runtimes import golden, health
from reconciler.runtimes.docker_connection import DockerConnection
from reconciler.runtimes.docker_observation import as_observed, sample_stats
from reconciler.runtimes.docker_spec import L_DEVICE, L_MANAGED, L_RESOLVED, container_spec

RESTART_POLICIES = ("unless-stopped", "on-failure", "always", "no")
LOG_LINES, LOG_LINE_CHARS = 10, 200


def _trim_logs(text: str, lines: int = LOG_LINES) -> str:
    out = [line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 3] + "..."
           for line in text.strip().splitlines()[-lines:]]
    return "\n".join(out)


class DockerRuntime:
    name = "docker"
    parallel_ports = False  # a model's port is published on publishAddress:port: one container holds it at a time

    def __init__(self, data_dir: Path, options: Mapping[str, Any]) -> None:
        self.data_dir = Path(data_dir)
        self.credentials: CredentialStore = options.get("credentials") or CredentialStore({})
        self.publish_address = str(options.get("publishAddress", "127.0.0.1"))
        self.restart_policy = str(options.get("restartPolicy", "unless-stopped"))
        if self.restart_policy not in RESTART_POLICIES:
            known = ", ".join(RESTART_POLICIES)
            raise InvalidConfig(f"restartPolicy {self.restart_policy!r} is not one of {known}")
        self.connection = DockerConnection(
            options.get("dockerHost") or None,
            connect_timeout=float(options.get("connectTimeout", 5.0)),
            api_timeout=float(options.get("apiTimeout", 120.0)),
        )
        self.stop_timeout = int(options.get("stopTimeout", 10))

    def client(self) -> Any:
        """A connected client; ``DaemonUnreachable`` within ``connectTimeout`` when no daemon answers."""
        return self.connection.client()

    # -- images ---------------------------------------------------------------------------------------

    def ensure_image(self, workload: Workload) -> str:
        """The image id of ``workload.image``: the local image if present, else pulled from its registry."""
        ref = workload.image or ""
        what = f"model {workload.model} version {workload.version}: image {ref}"
        client = self.client()
        import docker

        with self.connection.translate(what):
            try:
                return str(client.images.get(ref).id)
            except docker.errors.ImageNotFound:
                pass
            auth = self._auth_config(workload)
            self._check_insecure(workload, client)
            repository, _, digest = ref.partition("@")
            if not digest:
                repository, digest = ref, ""
            for event in client.api.pull(repository, tag=digest or None, stream=True, decode=True,
                                         auth_config=auth):
                if isinstance(event, dict) and event.get("error"):
                    error = mask(str(event["error"]), self.connection.secrets)
                    raise docker.errors.APIError(error, explanation=error)
            return str(client.images.get(ref).id)

    def _resolved(self, client: Any, ref: str, image_id: str) -> str:
        """``repo@sha256:...`` for a tag-only ``ref`` (the image id when it never came from a registry)."""
        repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        with self.connection.translate(f"image {ref}"):
            digests = client.images.get(image_id).attrs.get("RepoDigests") or []
        return next((d for d in digests if d.split("@", 1)[0] == repository), image_id)

    def _auth_config(self, workload: Workload) -> dict[str, str] | None:
        registry = workload.registry
        credential = self.credentials.resolve(registry.credentials_ref if registry else None)
        if credential is None:
            return None
        self.connection.secrets = tuple({*self.connection.secrets, *credential.secrets()})
        if credential.token and not credential.password:
            return {"registrytoken": credential.token}
        return {"username": credential.username or "", "password": credential.password or ""}

    def _check_insecure(self, workload: Workload, client: Any) -> None:
        """skipTLSVerify / plain HTTP are daemon settings for Docker: say so rather than fail obscurely."""
        registry = workload.registry
        if registry is None or not (registry.skip_tls_verify or registry.plain_http):
            return
        import ipaddress

        info = client.info().get("RegistryConfig") or {}
        if (info.get("IndexConfigs") or {}).get(registry.address, {}).get("Secure") is False:
            return
        with contextlib.suppress(ValueError):
            ip = ipaddress.ip_address(registry.host)
            if any(ip in ipaddress.ip_network(c) for c in info.get("InsecureRegistryCIDRs") or []):
                return
        raise InvalidConfig(
            f"registry {registry.alias} ({registry.address}) is marked skipTLSVerify/plain HTTP, but the "
            f"Docker daemon does not allow it: add \"{registry.address}\" to daemon.json insecure-registries"
        )

    # -- the Runtime protocol -------------------------------------------------------------------------

    def observe(self, device: str, with_stats: bool = True) -> list[Observed]:
        """Our containers for ``device``; ``with_stats`` adds memory and CPU (costs about a second: dockerd
        samples stats once a second, even for a one-shot call)."""
        client = self.client()
        with self.connection.translate(f"runtime docker: list containers of device {device}"):
            ours = {"label": [f"{L_MANAGED}=true", f"{L_DEVICE}={device}"]}
            found = client.containers.list(all=True, filters=ours)
            # Each stats call waits for dockerd's next sample (up to a second): take them side by side.
            running = [c for c in found if c.status == "running" and with_stats]
            with ThreadPoolExecutor(max_workers=max(1, min(4, len(running)))) as pool:
                stats = dict(zip([c.id for c in running], pool.map(sample_stats, running), strict=True))
            return [as_observed(c, stats.get(c.id)) for c in found]

    def host_port(self, observed: Observed, port: int) -> tuple[str, int] | None:
        """Where the container's ``port`` is published on the host, as (address, port)."""
        client = self.client()
        with self.connection.translate(f"container {observed.handle[:12]}"):
            attrs = client.containers.get(observed.handle).attrs
        bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
        if not bindings:
            return None
        address = bindings[0]["HostIp"]
        if address in ("", "0.0.0.0", "::"):
            address = "127.0.0.1"
        return address, int(bindings[0]["HostPort"])

    def start(self, workload: Workload) -> Observed:
        spec = container_spec(workload, self.publish_address, self.restart_policy)
        spec["environment"].update(storage_env(workload.storage_credentials, self.credentials))
        what = f"model {workload.model} version {workload.version}"
        for path in (workload.model_dir, workload.detectors_config):
            if path and not Path(path).exists():
                raise NotFound(f"{what}: {path} does not exist (nothing to mount into the container)")
        image_id = self.ensure_image(workload)
        client = self.client()
        if "@sha256:" not in spec["image"]:
            spec["labels"][L_RESOLVED] = self._resolved(client, spec["image"], image_id)
        with self.connection.translate(f"{what}: create container"):
            container = client.containers.create(**spec)
        try:
            with self.connection.translate(f"{what}: start container {container.name}"):
                container.start()
                container.reload()
        except ReconcilerError:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return as_observed(container, None)

    def _container(self, observed: Observed) -> Any:
        """Our container behind ``observed``, or None when it is gone.  Never one without our labels."""
        import docker

        client = self.client()
        with self.connection.translate(f"container {observed.handle[:12]}"):
            try:
                container = client.containers.get(observed.handle)
            except docker.errors.NotFound:
                return None
        if (container.labels or {}).get(L_MANAGED) != "true":
            raise Stalled(f"container {container.name} does not carry our labels: refusing to touch it")
        return container

    def unsupported(self, workload: Workload) -> list[str]:
        return []  # every setting maps to a container option

    def check_health(self, workload: Workload, observed: Observed) -> HealthResult:
        container = self._container(observed)
        what = f"model {workload.model} version {workload.version}"
        if container is None:
            return HealthResult(False, f"{what}: container {observed.handle[:12]} is gone")
        check = workload.health

        def probe() -> str | None:
            with self.connection.translate(f"{what}: inspect container"):
                container.reload()
            state = container.attrs.get("State") or {}
            if state.get("Status") != "running" or state.get("Restarting"):
                return f"container {container.name} {state.get('Status')} (exit code {state.get('ExitCode')})"
            if container.attrs.get("RestartCount", 0) > observed.restarts:
                return f"container {container.name} restarted {container.attrs['RestartCount']} times"
            return None

        port = check.port or workload.port
        if check.path and port:
            bound = self.host_port(observed, port)
            if bound is None:
                result = HealthResult(False, f"port {port} of the container is not published")
            else:
                path = check.path if check.path.startswith("/") else "/" + check.path
                result = health.http_check(f"http://{bound[0]}:{bound[1]}{path}", check.timeout, probe=probe)
                if result.healthy and check.golden is not None:
                    result = golden.check(bound[0], bound[1], workload.model_dir, check.golden, check.timeout)
        elif (container.attrs.get("Config") or {}).get("Healthcheck"):
            result = self._image_healthcheck(container, check.timeout, probe)
        else:
            result = health.alive_check(probe, check.alive_seconds)
        if result.healthy:
            return result
        tail = _trim_logs(self.logs(observed))
        message = f"{what}: health check failed: {result.message}"
        if tail:
            message += f"\nlast log lines of {container.name}:\n{tail}"
        return HealthResult(False, mask(message, self.connection.secrets), result.seconds)

    def _image_healthcheck(self, container: Any, timeout: float, probe: health.Probe) -> HealthResult:
        """Wait for the image's own HEALTHCHECK to say healthy (Docker runs it; we read State.Health)."""
        start = time.monotonic()
        while True:
            reason = probe()
            status = ((container.attrs.get("State") or {}).get("Health") or {}).get("Status")
            elapsed = time.monotonic() - start
            if status == "healthy":
                return HealthResult(True, "image HEALTHCHECK: healthy", elapsed)
            if reason or status == "unhealthy" or elapsed >= timeout:
                log = ((container.attrs.get("State") or {}).get("Health") or {}).get("Log") or []
                output = _trim_logs(str(log[-1].get("Output", "")), 3) if log else ""
                why = reason or f"image HEALTHCHECK {status or 'no result'} after {elapsed:.1f}s"
                return HealthResult(False, why + (f" ({output})" if output else ""), elapsed)
            time.sleep(0.2)

    def stop(self, observed: Observed) -> None:
        container = self._container(observed)
        if container is None:
            return
        import docker

        with self.connection.translate(f"remove container {container.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                if container.status == "running":
                    container.stop(timeout=self.stop_timeout)
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(v=True, force=True)

    def reload(self, observed: Observed) -> None:
        container = self._container(observed)
        if container is None:
            raise NotFound(f"container {observed.handle[:12]} of model {observed.model} is gone")
        with self.connection.translate(f"signal container {container.name}"):
            container.kill(signal="SIGHUP")

    def logs(self, observed: Observed, lines: int = 20) -> str:
        container = self._container(observed)
        if container is None:
            return ""
        with self.connection.translate(f"logs of container {container.name}"):
            raw: bytes = container.logs(stdout=True, stderr=True, tail=lines)
        return raw.decode("utf-8", errors="replace")
