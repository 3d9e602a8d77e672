"""status.yaml: built from the cycle's facts and the agent's state (schema: schemas/status.schema.json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from reconciler import __version__
from reconciler.fleet.document import Loader
from reconciler.model import DesiredState

# Fields whose change alone is not worth a commit: they move with every cycle or with every fleet commit,
# even one that changes nothing on this device (ten thousand devices would each commit for it).  Heartbeats
# and the next real change carry them.
VOLATILE = ("lastSeen", "push", "observedCommit", "appliedCommit", "fetch")
VOLATILE_PERF = ("memoryBytes", "cpuPercent")
# libyaml: every cycle renders its document and compares it with the previous one (pure-Python yaml took
# half of a no-op cycle's own time)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def build(*, device: str, runtime: str | None, observed: str | None, applied: str | None, phase: str,
          conditions: list[dict[str, str]], models: Mapping[str, Mapping[str, Any]],
          desired: DesiredState | None, drift: list[str], now: str, pending: int,
          push_error: str | None, fetch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    running_versions = {m: str(info.get("version")) for m, info in models.items()}
    doc: dict[str, Any] = {
        "apiVersion": "fleet/v1",
        "kind": "DeviceStatus",
        "device": device,
        "agentVersion": __version__,
        "runtime": runtime,
        "observedCommit": observed,
        "appliedCommit": applied,
        "phase": phase,
        "conditions": conditions,
        "models": [],
        "detectors": [],
        "drift": sorted(drift),
        "lastSeen": now,
        "push": {"pending": pending, "lastError": push_error},
    }
    if fetch is not None:
        doc["fetch"] = dict(fetch)
    for name in sorted(models):
        info = models[name]
        entry: dict[str, Any] = {
            "name": name, "version": str(info.get("version")), "digest": info.get("digest"),
            "state": info.get("state", "pending"), "since": info.get("since", now),
            "lastError": info.get("lastError"), "group": info.get("group", ""),
            "performance": {k: info.get("performance", {}).get(k) for k in
                            ("pullSeconds", "startSeconds", "memoryBytes", "cpuPercent")},
        }
        signer = (info.get("signatures") or {}).get(entry["version"])
        if signer:
            entry["signedBy"] = str(signer)  # the model signing key that signed this version
        if info.get("address"):
            entry["address"] = info["address"]
        if info.get("warnings"):
            entry["warnings"] = list(info["warnings"])
        if info.get("desiredVersion") and info.get("desiredVersion") != entry["version"]:
            entry["desiredVersion"] = str(info["desiredVersion"])
        doc["models"].append(entry)
    if desired is not None:
        for d in sorted(desired.detectors, key=lambda d: d.detector_id):
            state = models.get(d.model, {}).get("state")
            doc["detectors"].append({"detector_id": d.detector_id, "model": d.model,
                                     "version": running_versions.get(d.model),
                                     "state": "active" if state == "running" else "waiting"})
    return doc


def render(doc: Mapping[str, Any]) -> str:
    return yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def parse(text: str | None) -> dict[str, Any] | None:
    """A status document read back (the previous one, to say what changed); None when absent or unreadable."""
    if not text:
        return None
    try:
        doc = yaml.load(text, Loader=Loader)
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) else None


def significant(text: str | None) -> Any:
    """The part of a status document whose change deserves a commit."""
    doc = parse(text)
    if doc is None:
        return None
    for key in VOLATILE:
        doc.pop(key, None)
    for m in doc.get("models") or []:
        for k in VOLATILE_PERF:
            (m.get("performance") or {}).pop(k, None)
    return doc
