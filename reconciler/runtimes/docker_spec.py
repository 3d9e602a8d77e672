"""How a workload becomes a container: our labels, the mounts, ``containers.create`` arguments, and the
settings we compare to ``docker inspect`` to see a container changed by hand.

Pure (no Docker client, no I/O): kept apart so the translation is read and unit-tested on its own, and
``docker.py`` holds only the talking to the daemon.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import InvalidConfig
from reconciler.model import Resources, Workload
from reconciler.quantities import memory_bytes

LABEL = "io.edge-reconciler"
L_MANAGED, L_DEVICE, L_MODEL = f"{LABEL}.managed", f"{LABEL}.device", f"{LABEL}.model"
L_VERSION, L_SPEC, L_CONFIG = f"{LABEL}.version", f"{LABEL}.spec-hash", f"{LABEL}.config"
L_RESOLVED = f"{LABEL}.resolved-image"  # the digest a tag-only image reference resolved to
MODEL_MOUNT = "/model"
DETECTORS_MOUNT = "/etc/reconciler/detectors.yaml"



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
    writable = [[workload.storage_dir, workload.storage_dir]] if workload.storage_dir else []
    if workload.model_dir:
        mounts.append([str(Path(workload.model_dir)), MODEL_MOUNT])
    if workload.detectors_config:
        mounts.append([str(Path(workload.detectors_config)), DETECTORS_MOUNT])
    return {
        "nano_cpus": round(r.cpus * 1e9) if r.cpus else 0,
        "memory": memory_bytes(r.memory) if r.memory else 0,
        "gpus": [d["count"] for d in device_requests(r.gpus)],
        "restart": restart_policy,
        # the model's port on publishAddress:port, as Wallaroo publishes EDGE_PORT: clients find it where the
        # fleet says, not on a port Docker picks
        "ports": [[f"{p}/tcp", workload.publish_address or publish_address, str(p)] for p in ports],
        "mounts": mounts,
        "writable": writable,
    }


def observed_settings(attrs: Mapping[str, Any]) -> dict[str, Any]:
    host = attrs.get("HostConfig") or {}
    bindings = host.get("PortBindings") or {}
    return {
        "nano_cpus": host.get("NanoCpus") or 0,
        "memory": host.get("Memory") or 0,
        "gpus": [d.get("Count") for d in host.get("DeviceRequests") or []],
        "restart": (host.get("RestartPolicy") or {}).get("Name") or "no",
        "ports": sorted([port, (b[0] if b else {}).get("HostIp", ""), (b[0] if b else {}).get("HostPort", "")]
                        for port, b in bindings.items()),
        "mounts": [[m.get("Source"), m.get("Target")] for m in host.get("Mounts") or [] if m.get("ReadOnly")],
        "writable": [[m.get("Source"), m.get("Target")] for m in host.get("Mounts") or [] if not m.get("ReadOnly")],
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
        "mounts": [*({"Type": "bind", "Source": s, "Target": t, "ReadOnly": True} for s, t in wanted["mounts"]),
                   *({"Type": "bind", "Source": s, "Target": t, "ReadOnly": False} for s, t in wanted["writable"])],
        "ports": {port: (address, int(host_port)) for port, address, host_port in wanted["ports"]},
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
