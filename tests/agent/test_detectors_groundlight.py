"""DATA_DIR/detectors.yaml loads with Groundlight's own edge-endpoint config model and means what the fleet says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from groundlight import edge as groundlight_edge

from reconciler.agent import detectors
from reconciler.fleet.resolve import render_device
from reconciler.fleet.source import DirSource
from reconciler.fleet.view import FleetView
from reconciler.main import main
from tests.fleetutil import ROOT


@pytest.mark.parametrize("device", ["cam-north-01", "cam-south-01", "lab-01"])
def test_rendered_file_loads_in_edge_endpoint_config(tmp_path: Path, device: str) -> None:
    state = render_device(FleetView(DirSource(ROOT / "fleet-config")), device)
    path = detectors.write(tmp_path, state.detectors, {m.name: m.version for m in state.models})
    config = groundlight_edge.EdgeEndpointConfig.from_yaml(filename=str(path))
    assert sorted(d.detector_id for d in config.detectors) == sorted(d.detector_id for d in state.detectors)
    for d in state.detectors:
        entry = next(c for c in config.detectors if c.detector_id == d.detector_id)
        inference = config.edge_inference_configs[entry.edge_inference_config]
        assert inference.enabled
        assert inference.always_return_edge_prediction is d.always_return_edge_prediction
        assert inference.disable_cloud_escalation is d.disable_cloud_escalation
        if d.always_return_edge_prediction and not d.disable_cloud_escalation:
            assert inference.min_time_between_escalations == d.min_time_between_escalations


def test_example_fleet_covers_every_escalation_mode(tmp_path: Path) -> None:
    modes = set()
    for device in ("cam-north-01", "cam-south-01", "lab-01"):
        state = render_device(FleetView(DirSource(ROOT / "fleet-config")), device)
        path = detectors.write(tmp_path, state.detectors, {m.name: m.version for m in state.models})
        config = groundlight_edge.EdgeEndpointConfig.from_yaml(filename=str(path))
        modes |= {(c.always_return_edge_prediction, c.disable_cloud_escalation)
                  for c in config.edge_inference_configs.values()}
    assert modes == {(False, False), (True, False), (True, True)}


def test_render_shows_the_file_the_agent_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(ROOT / "fleet-config"), "--device", "lab-01"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)[detectors.FILE]
    state = render_device(FleetView(DirSource(ROOT / "fleet-config")), "lab-01")
    written = detectors.write(tmp_path, state.detectors, {m.name: m.version for m in state.models})
    assert shown == yaml.safe_load(written.read_text())
    # our own fields ride along in the detector entries, where Groundlight's loader ignores them
    entry = next(d for d in shown["detectors"] if d["model"] == "shelf-detector")
    assert entry["version"] == "2.0.0" and entry["confidence_threshold"] == 0.9
