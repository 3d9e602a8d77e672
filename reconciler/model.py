"""Frozen value types passed between the fleet loader, the planner, the store and the runtimes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Resources:
    """Resource hints of a model version: ``cpus`` fractional, ``memory`` like ``1536m``/``1g``, ``gpus``
    ``"all"`` or a count."""

    cpus: float | None = None
    memory: str | None = None
    gpus: str | int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("cpus", self.cpus), ("memory", self.memory), ("gpus", self.gpus)) if v is not None}


@dataclass(frozen=True)
class GoldenSet:
    """Cases (JSON lines of ``request`` and ``expected``) in the artifact at ``file``, POSTed to ``path``;
    numbers may differ from the expected ones by ``tolerance``, anything else must be equal."""

    file: str
    path: str
    tolerance: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "path": self.path, "tolerance": self.tolerance}


@dataclass(frozen=True)
class HealthCheck:
    """HTTP GET ``path`` on ``port`` (when given) must answer 2xx within ``timeout`` seconds; without a path
    the workload must still be alive after ``alive_seconds``."""

    path: str | None = None
    port: int | None = None
    timeout: float = 30.0
    alive_seconds: float = 2.0
    golden: GoldenSet | None = None  # checked after the HTTP check passes (runtimes/golden.py)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"timeout": self.timeout, "aliveSeconds": self.alive_seconds}
        if self.golden is not None:
            d["golden"] = self.golden.to_dict()
        if self.path is not None:
            d["path"] = self.path
        if self.port is not None:
            d["port"] = self.port
        return d


@dataclass(frozen=True)
class ModelAssignment:
    """One model version a device must run, resolved from its groups."""

    name: str
    version: str
    group: str
    artifact: str | None = None
    image: str | None = None
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    health: HealthCheck = field(default_factory=HealthCheck)
    resources: Resources = field(default_factory=Resources)
    reload: str = "restart"
    registry: str | None = None  # registry alias whose settings apply to artifact and image
    # why a rollout gives this version (or leaves the pin): shown by render, no part of what runs
    rollout: str | None = field(default=None, compare=False)
    # a rollout's pull spreading (rollout.maxPullsPerMinute): pull no sooner than pull_delay seconds after
    # pull_origin (when the step began; None: when the device first saw it)
    pull_delay: float = field(default=0.0, compare=False)
    pull_origin: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "version": self.version, "group": self.group}
        if self.rollout:
            d["rollout"] = self.rollout
        if self.artifact:
            d["artifact"] = self.artifact
        if self.image:
            d["image"] = self.image
        if self.command:
            d["command"] = list(self.command)
        if self.env:
            d["env"] = dict(self.env)
        if self.port is not None:
            d["port"] = self.port
        d["health"] = self.health.to_dict()
        if self.resources.to_dict():
            d["resources"] = self.resources.to_dict()
        d["reload"] = self.reload
        if self.registry:
            d["registry"] = self.registry
        return d


@dataclass(frozen=True)
class Detector:
    """A Groundlight-style detector answered by one of the device's models (defaults from the seed)."""

    detector_id: str
    model: str
    group: str
    confidence_threshold: float = 0.9
    always_return_edge_prediction: bool = False
    disable_cloud_escalation: bool = False
    min_time_between_escalations: float = 2.0
    local_inference_template: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector_id": self.detector_id,
            "model": self.model,
            "group": self.group,
            "confidence_threshold": self.confidence_threshold,
            "always_return_edge_prediction": self.always_return_edge_prediction,
            "disable_cloud_escalation": self.disable_cloud_escalation,
            "min_time_between_escalations": self.min_time_between_escalations,
            "local_inference_template": self.local_inference_template,
        }


@dataclass(frozen=True)
class RegistryConfig:
    """How to reach one registry.  ``credentials_ref`` names a credential held on the device."""

    alias: str
    host: str
    port: int | None = None
    credentials_ref: str | None = None
    skip_tls_verify: bool = False
    plain_http: bool = False
    ca_file: str | None = None
    mirrors: tuple[str, ...] = ()  # host[:port] of mirrors (pull-through caches), tried first

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


@dataclass(frozen=True)
class DesiredState:
    """Everything one device must run at one fleet revision."""

    device: str
    labels: Mapping[str, str]
    groups: tuple[str, ...]
    models: tuple[ModelAssignment, ...]
    detectors: tuple[Detector, ...]
    config: Mapping[str, Any]
    registries: Mapping[str, RegistryConfig] = field(default_factory=dict)
    # fleet-wide timing in seconds: heartbeatInterval, staleAfter, interval, jitter, healthTimeout
    settings: Mapping[str, float] = field(default_factory=dict)

    def model(self, name: str) -> ModelAssignment | None:
        return next((m for m in self.models if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "labels": dict(sorted(self.labels.items())),
            "groups": list(self.groups),
            "models": [m.to_dict() for m in sorted(self.models, key=lambda m: m.name)],
            "detectors": [d.to_dict() for d in sorted(self.detectors, key=lambda d: d.detector_id)],
            "config": _sorted(dict(self.config)),
        }


@dataclass(frozen=True)
class Workload:
    """What a runtime is asked to run: one model version on one device, fully resolved."""

    device: str
    model: str
    version: str
    model_dir: str
    detectors_config: str
    command: tuple[str, ...] = ()
    image: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    port: int | None = None
    health: HealthCheck = field(default_factory=HealthCheck)
    resources: Resources = field(default_factory=Resources)
    reload: str = "restart"
    registry: RegistryConfig | None = None
    publish_address: str | None = None  # where ``port`` is published (docker) or listened on (MODEL_ADDRESS)
    storage_dir: str | None = None  # filesystem storage: created by the agent, mounted read-write by docker
    storage_credentials: str | None = None  # credentialsRef of s3 storage: resolved by the runtime at start

    @property
    def address(self) -> str | None:
        """``publishAddress:port`` where the model answers, when it has a port."""
        return f"{self.publish_address or '127.0.0.1'}:{self.port}" if self.port is not None else None

    @property
    def spec_hash(self) -> str:
        """Stable hash of everything that, when changed, requires replacing the running workload."""
        doc = {
            "device": self.device,
            "model": self.model,
            "version": self.version,
            "model_dir": self.model_dir,
            "command": list(self.command),
            "image": self.image,
            "env": sorted(self.env),
            "port": self.port,
            "health": self.health.to_dict(),
            "resources": self.resources.to_dict(),
        }
        # only when set, so that workloads from before these fields keep their hash
        for key, value in (("publish_address", self.publish_address), ("storage_dir", self.storage_dir),
                           ("storage_credentials", self.storage_credentials)):
            if value is not None:
                doc[key] = value
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def workload_to_dict(w: Workload) -> dict[str, Any]:
    """A plain form of a workload, kept in the agent's state so that a replaced version can be started again."""
    return {
        "device": w.device, "model": w.model, "version": w.version, "model_dir": w.model_dir,
        "detectors_config": w.detectors_config, "command": list(w.command), "image": w.image,
        "env": [list(p) for p in w.env], "port": w.port, "health": w.health.to_dict(),
        "resources": w.resources.to_dict(), "reload": w.reload,
        "registry": None if w.registry is None else {
            "alias": w.registry.alias, "host": w.registry.host, "port": w.registry.port,
            "credentials_ref": w.registry.credentials_ref, "skip_tls_verify": w.registry.skip_tls_verify,
            "plain_http": w.registry.plain_http, "ca_file": w.registry.ca_file},
        "publish_address": w.publish_address, "storage_dir": w.storage_dir,
        "storage_credentials": w.storage_credentials,
    }


def golden_from_dict(g: Mapping[str, Any] | None) -> GoldenSet | None:
    """A model version's ``health.golden`` (or its stored form) as a value; None when absent."""
    if not g:
        return None
    return GoldenSet(file=str(g["file"]), path=str(g["path"]), tolerance=float(g.get("tolerance", 0.0)))


def workload_from_dict(d: Mapping[str, Any]) -> Workload:
    h = d.get("health") or {}
    r = d.get("resources") or {}
    reg = d.get("registry")
    return Workload(
        device=d["device"], model=d["model"], version=d["version"], model_dir=d["model_dir"],
        detectors_config=d["detectors_config"], command=tuple(d.get("command") or ()), image=d.get("image"),
        env=tuple((str(k), str(v)) for k, v in d.get("env") or ()), port=d.get("port"),
        health=HealthCheck(path=h.get("path"), port=h.get("port"), timeout=float(h.get("timeout", 30.0)),
                           alive_seconds=float(h.get("aliveSeconds", 2.0)), golden=golden_from_dict(h.get("golden"))),
        resources=Resources(cpus=r.get("cpus"), memory=r.get("memory"), gpus=r.get("gpus")),
        reload=d.get("reload", "restart"),
        registry=None if not reg else RegistryConfig(**reg),
        publish_address=d.get("publish_address"), storage_dir=d.get("storage_dir"),
        storage_credentials=d.get("storage_credentials"),
    )


@dataclass(frozen=True)
class Observed:
    """One workload as a runtime sees it now."""

    model: str
    version: str
    spec_hash: str
    handle: str  # pid for the process runtime, container id for docker
    state: str  # running | exited | missing
    started_at: float = 0.0
    memory_bytes: int | None = None
    cpu_percent: float | None = None
    restarts: int = 0
    drifted: bool = False  # changed by hand since we started it
    message: str = ""


@dataclass(frozen=True)
class HealthResult:
    healthy: bool
    message: str = ""
    seconds: float = 0.0


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value
