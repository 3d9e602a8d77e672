"""detectors.yaml: the device's detectors in the layout of Groundlight's edge endpoint, plus our fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from reconciler.durable import write_atomic
from reconciler.model import Detector

FILE = "detectors.yaml"


def document(detectors: Iterable[Detector], versions: Mapping[str, str]) -> dict[str, Any]:
    """The file as Groundlight's ``EdgeEndpointConfig`` reads it: one ``edge_inference_configs`` entry per
    detector (named by its id, so two detectors never share a preset by accident) and ``detectors`` entries that
    name it.  Each detector entry also keeps the older inline layout of the seed (``local_inference_template``
    and the flags) and our own fields (``model``, ``version``, ``confidence_threshold``): their loader ignores
    fields it does not know, so one file serves both layouts and the workload."""
    configs: dict[str, Any] = {}
    out = []
    for d in sorted(detectors, key=lambda d: d.detector_id):
        flags: dict[str, Any] = {
            "always_return_edge_prediction": d.always_return_edge_prediction,
            "disable_cloud_escalation": d.disable_cloud_escalation,
        }
        # the seed: only meaningful with edge answers and escalation on
        if d.always_return_edge_prediction and not d.disable_cloud_escalation:
            flags["min_time_between_escalations"] = d.min_time_between_escalations
        configs[d.detector_id] = {"enabled": True, **flags}
        out.append({"detector_id": d.detector_id, "edge_inference_config": d.detector_id,
                    "local_inference_template": d.local_inference_template, **flags,
                    "model": d.model, "version": versions.get(d.model), "confidence_threshold": d.confidence_threshold})
    return {"edge_inference_configs": configs, "detectors": out}


def render(detectors: Iterable[Detector], versions: Mapping[str, str]) -> bytes:
    """The bytes of ``DATA_DIR/detectors.yaml``."""
    return yaml.safe_dump(document(detectors, versions), sort_keys=False).encode()


def per_model_hash(detectors: Iterable[Detector]) -> dict[str, str]:
    """A hash of each model's detectors, so that only workloads whose detectors changed are told."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for d in detectors:
        by_model.setdefault(d.model, []).append(d.to_dict())
    return {m: hashlib.sha256(json.dumps(sorted(v, key=lambda x: x["detector_id"]), sort_keys=True).encode())
            .hexdigest()[:16] for m, v in by_model.items()}


def write(data_dir: Path, detectors: Iterable[Detector], versions: Mapping[str, str]) -> Path:
    path = data_dir / FILE
    text = render(detectors, versions)
    try:
        if path.read_bytes() == text:
            return path
    except FileNotFoundError:
        pass
    write_atomic(path, text)
    return path
