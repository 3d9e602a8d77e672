"""detectors.yaml: the device's detectors in the Groundlight edge-endpoint layout, plus our fields."""

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
    out = []
    for d in sorted(detectors, key=lambda d: d.detector_id):
        entry: dict[str, Any] = {
            "detector_id": d.detector_id,
            "local_inference_template": d.local_inference_template,
            "always_return_edge_prediction": d.always_return_edge_prediction,
            "disable_cloud_escalation": d.disable_cloud_escalation,
        }
        # the seed: only meaningful with edge answers and escalation on
        if d.always_return_edge_prediction and not d.disable_cloud_escalation:
            entry["min_time_between_escalations"] = d.min_time_between_escalations
        entry.update({"model": d.model, "version": versions.get(d.model), "confidence_threshold": d.confidence_threshold})
        out.append(entry)
    return {"detectors": out}


def per_model_hash(detectors: Iterable[Detector]) -> dict[str, str]:
    """A hash of each model's detectors, so that only workloads whose detectors changed are told."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for d in detectors:
        by_model.setdefault(d.model, []).append(d.to_dict())
    return {m: hashlib.sha256(json.dumps(sorted(v, key=lambda x: x["detector_id"]), sort_keys=True).encode())
            .hexdigest()[:16] for m, v in by_model.items()}


def write(data_dir: Path, detectors: Iterable[Detector], versions: Mapping[str, str]) -> Path:
    path = data_dir / FILE
    text = yaml.safe_dump(document(detectors, versions), sort_keys=False).encode()
    try:
        if path.read_bytes() == text:
            return path
    except FileNotFoundError:
        pass
    write_atomic(path, text)
    return path
