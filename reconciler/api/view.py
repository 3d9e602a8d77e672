"""What the API answers from: a frozen view the loop publishes after each pass.

Requests never touch the loop's live objects; they read the last view (one reference swap), so an API
client can neither slow a pass nor see half of one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import DesiredState, Observed


@dataclass(frozen=True)
class DeviceView:
    device: str
    status: Mapping[str, Any]  # the status document of the pass, as committed to status/<device>
    models: tuple[Mapping[str, Any], ...]
    detectors: tuple[Mapping[str, Any], ...]
    restarts: Mapping[str, int] = field(default_factory=dict)
    built: float = 0.0

    @property
    def ready(self) -> bool:
        return self.status.get("phase") == "Ready"


def build_view(device: str, status: Mapping[str, Any], state_models: Mapping[str, Mapping[str, Any]],
               desired: DesiredState | None, observed: Iterable[Observed], runtime: str | None) -> DeviceView:
    """The status document plus what a person at the device asks for: where each model answers (Wallaroo
    edge's ``GET /models``), who signed it, each detector's settings."""
    status = copy.deepcopy(dict(status))  # the loop builds a new document each pass; this one stays ours
    models = []
    for entry in status.get("models") or []:
        info = state_models.get(entry["name"], {})
        port = (info.get("workload") or {}).get("port")
        # the executor records where each started workload answers (publishAddress:port, either runtime);
        # state written before it did so only has the port, which a process workload listens on locally
        address = info.get("address") or (f"127.0.0.1:{port}" if port is not None and runtime == "process" else None)
        models.append({"name": entry["name"], "version": entry["version"], "digest": entry.get("digest"),
                       "state": entry.get("state"), "since": entry.get("since"), "address": address,
                       "signer": entry.get("signedBy"), "lastError": entry.get("lastError")})
    settings = {d.detector_id: d.to_dict() for d in desired.detectors} if desired else {}
    detectors = tuple({**settings.get(d["detector_id"], {}), **d} for d in status.get("detectors") or [])
    restarts: dict[str, int] = {}
    for o in observed:
        restarts[o.model] = restarts.get(o.model, 0) + o.restarts
    return DeviceView(device=device, status=status, models=tuple(models), detectors=detectors,
                      restarts=restarts, built=time.time())
