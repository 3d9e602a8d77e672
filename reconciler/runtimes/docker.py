"""The ``docker`` runtime: one container per model version, through the docker SDK.

Containers carry our labels (device, model, version, spec hash, and the settings we gave them) so that
``observe`` finds them after an agent restart and never sees a container someone else started.  Host ports
are picked by Docker (ephemeral, on ``publishAddress``) so that a new version can start next to the old one
before the old one is removed; the published address is reported in ``Observed.message``.

The daemon is found as the docker CLI finds it: the ``dockerHost`` option, else ``DOCKER_HOST``, else the
default socket.  SDK exceptions are translated here; nothing from ``docker`` leaks to the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from reconciler.credentials import CredentialStore, mask
from reconciler.errors import (
    AuthError,
    InvalidConfig,
    NotFound,
    ReconcilerError,
    RuntimeUnavailable,
    Stalled,
    Transient,
)
from reconciler.model import HealthResult, Observed, Resources, Workload
from reconciler.runtimes import health

LABEL = "io.edge-reconciler"
L_MANAGED, L_DEVICE, L_MODEL = f"{LABEL}.managed", f"{LABEL}.device", f"{LABEL}.model"
L_VERSION, L_SPEC, L_CONFIG = f"{LABEL}.version", f"{LABEL}.spec-hash", f"{LABEL}.config"
L_RESOLVED = f"{LABEL}.resolved-image"  # the digest a tag-only image reference resolved to
MODEL_MOUNT = "/model"
DETECTORS_MOUNT = "/etc/reconciler/detectors.yaml"
RESTART_POLICIES = ("unless-stopped", "on-failure", "always", "no")
LOG_LINES, LOG_LINE_CHARS = 10, 200

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory(text: str) -> int:
    """``1536m``, ``1g``, ``512k``, ``1Gi``, ``2048`` (bytes) -> bytes; binary units, as ``docker -m``."""
    m = _MEMORY.match(str(text))
    if not m:
        raise InvalidConfig(f"resources.memory {text!r} is not a size like 512k, 1536m or 1g")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def device_requests(gpus: str | int | None) -> list[dict[str, Any]]:
    """``resources.gpus`` as Docker device requests: ``"all"`` -> count -1, ``2`` -> count 2, 0 -> none."""
    if gpus is None:
        return []
    if isinstance(gpus, str) and gpus.strip().lower() == "all":
        count = -1
    else:
        try:
            count = int(gpus)
        except ValueError:
            raise InvalidConfig(f"resources.gpus {gpus!r} must be 'all' or a count") from None
        if count < 0:
            raise InvalidConfig(f"resources.gpus {gpus!r} must be 'all' or a count")
    return [{"count": count, "capabilities": [["gpu"]]}] if count else []


def settings(workload: Workload, publish_address: str, restart_policy: str) -> dict[str, Any]:
    """The container settings that can drift (``docker update``) or be compared after the fact, normalised
    the same way from a workload and from ``docker inspect`` (see ``observed_settings``)."""
    r: Resources = workload.resources
    ports = sorted({p for p in (workload.port, workload.health.port) if p is not None})
    mounts = []
    if workload.model_dir:
        mounts.append([str(Path(workload.model_dir)), MODEL_MOUNT])
    if workload.detectors_config:
        mounts.append([str(Path(workload.detectors_config)), DETECTORS_MOUNT])
    return {
        "nano_cpus": round(r.cpus * 1e9) if r.cpus else 0,
        "memory": parse_memory(r.memory) if r.memory else 0,
        "gpus": [d["count"] for d in device_requests(r.gpus)],
        "restart": restart_policy,
        "ports": [[f"{p}/tcp", publish_address] for p in ports],
        "mounts": mounts,
    }


def observed_settings(attrs: Mapping[str, Any]) -> dict[str, Any]:
    host = attrs.get("HostConfig") or {}
    bindings = host.get("PortBindings") or {}
    return {
        "nano_cpus": host.get("NanoCpus") or 0,
        "memory": host.get("Memory") or 0,
        "gpus": [d.get("Count") for d in host.get("DeviceRequests") or []],
        "restart": (host.get("RestartPolicy") or {}).get("Name") or "no",
        "ports": sorted([port, (b[0] if b else {}).get("HostIp", "")] for port, b in bindings.items()),
        "mounts": [[m.get("Source"), m.get("Target")] for m in host.get("Mounts") or [] if m.get("ReadOnly")],
    }


def container_spec(workload: Workload, publish_address: str, restart_policy: str) -> dict[str, Any]:
    """Keyword arguments for ``containers.create``: pure, so the translation is unit-tested without Docker."""
    if not workload.image:
        what = f"model {workload.model} version {workload.version}"
        raise InvalidConfig(f"{what}: runtime docker needs an image")
    wanted = settings(workload, publish_address, restart_policy)
    env = dict(workload.env)
    env.update(MODEL_NAME=workload.model, MODEL_VERSION=workload.version)
    if workload.model_dir:
        env["MODEL_DIR"] = MODEL_MOUNT
    if workload.detectors_config:
        env["DETECTORS_CONFIG"] = DETECTORS_MOUNT
    spec: dict[str, Any] = {
        "image": workload.image,
        "name": container_name(workload),
        "environment": env,
        "labels": {
            L_MANAGED: "true",
            L_DEVICE: workload.device,
            L_MODEL: workload.model,
            L_VERSION: workload.version,
            L_SPEC: workload.spec_hash,
            L_CONFIG: json.dumps(wanted, sort_keys=True, separators=(",", ":")),
        },
        "mounts": [{"Type": "bind", "Source": s, "Target": t, "ReadOnly": True} for s, t in wanted["mounts"]],
        "ports": {port: (address, None) for port, address in wanted["ports"]},
        "restart_policy": {"Name": restart_policy},
        "detach": True,
    }
    if workload.command:
        spec["command"] = list(workload.command)
    if wanted["nano_cpus"]:
        spec["nano_cpus"] = wanted["nano_cpus"]
    if wanted["memory"]:
        spec["mem_limit"] = wanted["memory"]
    if wanted["gpus"]:
        spec["device_requests"] = device_requests(workload.resources.gpus)
    return spec


def container_name(workload: Workload) -> str:
    # Unique per start: old and new containers of one model run side by side during a replacement.
    base = re.sub(r"[^a-zA-Z0-9_.-]", "-", f"{workload.device}.{workload.model}.{workload.version}")
    return f"rc.{base[:80]}.{secrets.token_hex(3)}"


def _epoch(stamp: str | None) -> float:
    if not stamp or stamp.startswith("0001-"):
        return 0.0
    # Docker prints nanoseconds; fromisoformat takes at most microseconds.
    m = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
    if not m:
        return 0.0
    frac = (m[2] or ".0")[:7]
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + frac + zone).timestamp()


def _cpu_percent(stats: Mapping[str, Any], started_at: float = 0.0) -> float | None:
    """As ``docker stats`` computes it: container CPU time over host CPU time, times the CPU count.  A one-shot
    sample has no previous one: then the average since ``started_at``, as the process runtime reports it."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        try:
            used = float(cpu["cpu_usage"]["total_usage"]) / 1e9
        except (KeyError, TypeError):
            return None
        age = time.time() - started_at
        return round(100.0 * used / age, 2) if started_at > 0 and age > 0 else None
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
    return round(delta / system * online * 100.0, 2) if system > 0 and delta >= 0 else 0.0


def _memory_bytes(stats: Mapping[str, Any]) -> int | None:
    mem = stats.get("memory_stats") or {}
    if "usage" not in mem:
        return None
    detail = mem.get("stats") or {}
    # Page cache is reclaimable: docker stats subtracts it too (cgroup v1 "cache", v2 "inactive_file").
    cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
    return int(mem["usage"]) - int(cache if cache < mem["usage"] else 0)


def _trim_logs(text: str, lines: int = LOG_LINES) -> str:
    out = [line if len(line) <= LOG_LINE_CHARS else line[: LOG_LINE_CHARS - 3] + "..."
           for line in text.strip().splitlines()[-lines:]]
    return "\n".join(out)


class DockerRuntime:
    name = "docker"
    parallel_ports = True  # the container port is published on a host port Docker picks per container

    def __init__(self, data_dir: Path, options: Mapping[str, Any]) -> None:
        self.data_dir = Path(data_dir)
        self.host: str | None = options.get("dockerHost") or None
        self.credentials: CredentialStore = options.get("credentials") or CredentialStore({})
        self.publish_address = str(options.get("publishAddress", "127.0.0.1"))
        self.restart_policy = str(options.get("restartPolicy", "unless-stopped"))
        if self.restart_policy not in RESTART_POLICIES:
            known = ", ".join(RESTART_POLICIES)
            raise InvalidConfig(f"restartPolicy {self.restart_policy!r} is not one of {known}")
        self.connect_timeout = float(options.get("connectTimeout", 5.0))
        self.api_timeout = float(options.get("apiTimeout", 120.0))
        self.stop_timeout = int(options.get("stopTimeout", 10))
        self._client: Any = None
        self._secrets: tuple[str, ...] = ()

    # -- connection and error translation -------------------------------------------------------------

    def _where(self) -> str:
        return self.host or os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"

    def client(self) -> Any:
        """A connected client; ``RuntimeUnavailable`` within ``connectTimeout`` when no daemon answers."""
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
            raise RuntimeUnavailable(
                f"runtime docker: no Docker daemon answers at {self._where()} ({type(exc).__name__}); "
                "start dockerd, or set dockerHost in the agent configuration, or use runtime: process"
            ) from None
        client.api.timeout = self.api_timeout
        self._client = client
        return client

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
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
        return mask(text, self._secrets)

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

    # -- images ---------------------------------------------------------------------------------------

    def ensure_image(self, workload: Workload) -> str:
        """The image id of ``workload.image``: the local image if present, else pulled from its registry."""
        ref = workload.image or ""
        what = f"model {workload.model} version {workload.version}: image {ref}"
        client = self.client()
        import docker

        with self._translate(what):
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
                    raise docker.errors.APIError(mask(str(event["error"]), self._secrets),
                                                 explanation=mask(str(event["error"]), self._secrets))
            return str(client.images.get(ref).id)

    def _resolved(self, client: Any, ref: str, image_id: str) -> str:
        """``repo@sha256:...`` for a tag-only ``ref`` (the image id when it never came from a registry)."""
        repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        with self._translate(f"image {ref}"):
            digests = client.images.get(image_id).attrs.get("RepoDigests") or []
        return next((d for d in digests if d.split("@", 1)[0] == repository), image_id)

    def _auth_config(self, workload: Workload) -> dict[str, str] | None:
        registry = workload.registry
        credential = self.credentials.resolve(registry.credentials_ref if registry else None)
        if credential is None:
            return None
        self._secrets = tuple({*self._secrets, *credential.secrets()})
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
        with self._translate(f"runtime docker: list containers of device {device}"):
            ours = {"label": [f"{L_MANAGED}=true", f"{L_DEVICE}={device}"]}
            found = client.containers.list(all=True, filters=ours)
            # Each stats call waits for dockerd's next sample (up to a second): take them side by side.
            running = [c for c in found if c.status == "running" and with_stats]
            with ThreadPoolExecutor(max_workers=max(1, min(4, len(running)))) as pool:
                stats = dict(zip([c.id for c in running], pool.map(self._stats, running), strict=True))
            return [self._observed(c, stats.get(c.id)) for c in found]

    def _stats(self, container: Any) -> Mapping[str, Any] | None:
        import docker

        try:
            try:
                # one-shot: one sample (about 1 s) instead of two (up to 2 s) for the CPU delta
                result: Mapping[str, Any] = container.stats(stream=False, one_shot=True)
            except docker.errors.InvalidVersion:  # API < 1.41
                result = container.stats(stream=False)
            return result
        except Exception:  # performance data is best effort: a container exiting right now has none
            return None

    def _observed(self, container: Any, stats: Mapping[str, Any] | None) -> Observed:
        attrs = container.attrs
        labels = attrs.get("Config", {}).get("Labels") or {}
        state = attrs.get("State") or {}
        problems = []
        status = state.get("Status", container.status)
        if status != "running":
            problems.append(f"container {container.name} is {status} (exit code {state.get('ExitCode')})")
        try:
            wanted = json.loads(labels.get(L_CONFIG, "{}"))
        except ValueError:
            wanted = {}
        actual = observed_settings(attrs)
        changed = sorted(k for k in wanted if wanted[k] != actual.get(k))
        if changed:
            problems.append(f"container {container.name} changed by hand: {', '.join(changed)}")
        message = "; ".join(problems)
        if not problems:
            resolved = labels.get(L_RESOLVED)
            shown = [f"image {attrs['Config'].get('Image')} resolved to {resolved}"] if resolved else []
            message = "; ".join([*shown, self._published(attrs)]).strip("; ")
        return Observed(
            model=labels.get(L_MODEL, ""),
            version=labels.get(L_VERSION, ""),
            spec_hash=labels.get(L_SPEC, ""),
            handle=container.id,
            state="running" if status == "running" else "exited",
            started_at=_epoch(state.get("StartedAt")),
            memory_bytes=_memory_bytes(stats) if stats else None,
            cpu_percent=_cpu_percent(stats, _epoch(state.get("StartedAt"))) if stats else None,
            restarts=int(attrs.get("RestartCount") or 0),
            drifted=bool(problems),
            message=message,
        )

    def _published(self, attrs: Mapping[str, Any]) -> str:
        ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
        shown = [f"{p} on {b[0]['HostIp']}:{b[0]['HostPort']}" for p, b in sorted(ports.items()) if b]
        return ("published " + ", ".join(shown)) if shown else ""

    def host_port(self, observed: Observed, port: int) -> tuple[str, int] | None:
        """Where the container's ``port`` is published on the host, as (address, port)."""
        client = self.client()
        with self._translate(f"container {observed.handle[:12]}"):
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
        what = f"model {workload.model} version {workload.version}"
        for path in (workload.model_dir, workload.detectors_config):
            if path and not Path(path).exists():
                raise NotFound(f"{what}: {path} does not exist (nothing to mount into the container)")
        image_id = self.ensure_image(workload)
        client = self.client()
        if "@sha256:" not in spec["image"]:
            spec["labels"][L_RESOLVED] = self._resolved(client, spec["image"], image_id)
        with self._translate(f"{what}: create container"):
            container = client.containers.create(**spec)
        try:
            with self._translate(f"{what}: start container {container.name}"):
                container.start()
                container.reload()
        except ReconcilerError:
            with contextlib.suppress(Exception):
                container.remove(force=True)
            raise
        return self._observed(container, None)

    def _container(self, observed: Observed) -> Any:
        """Our container behind ``observed``, or None when it is gone.  Never one without our labels."""
        import docker

        client = self.client()
        with self._translate(f"container {observed.handle[:12]}"):
            try:
                container = client.containers.get(observed.handle)
            except docker.errors.NotFound:
                return None
        if (container.labels or {}).get(L_MANAGED) != "true":
            raise Stalled(f"container {container.name} does not carry our labels: refusing to touch it")
        return container

    def check_health(self, workload: Workload, observed: Observed) -> HealthResult:
        container = self._container(observed)
        what = f"model {workload.model} version {workload.version}"
        if container is None:
            return HealthResult(False, f"{what}: container {observed.handle[:12]} is gone")
        check = workload.health

        def probe() -> str | None:
            with self._translate(f"{what}: inspect container"):
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
        return HealthResult(False, mask(message, self._secrets), result.seconds)

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

        with self._translate(f"remove container {container.name}"):
            with contextlib.suppress(docker.errors.NotFound):
                if container.status == "running":
                    container.stop(timeout=self.stop_timeout)
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(v=True, force=True)

    def reload(self, observed: Observed) -> None:
        container = self._container(observed)
        if container is None:
            raise NotFound(f"container {observed.handle[:12]} of model {observed.model} is gone")
        with self._translate(f"signal container {container.name}"):
            container.kill(signal="SIGHUP")

    def logs(self, observed: Observed, lines: int = 20) -> str:
        container = self._container(observed)
        if container is None:
            return ""
        with self._translate(f"logs of container {container.name}"):
            raw: bytes = container.logs(stdout=True, stderr=True, tail=lines)
        return raw.decode("utf-8", errors="replace")
