"""A small fleet for the device-service tests: one device, optionally one process model without an artifact
(a sleeping python3), in a bare repository reached over file://."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.fleetutil import git, git_init, write


def device_fleet(root: Path, device: str = "edge1", port: int | None = None, model: bool = True) -> Path:
    """The bare repo path.  The model ``sleeper`` 1.0 listens on nothing; ``port`` is what it declares."""
    work = root / "fleet-work"
    write(work, "fleet.yaml", """
        apiVersion: fleet/v1
        kind: Fleet
        metadata: {name: svc}
        spec:
          defaults: {runtime: process}
          status: {heartbeatInterval: 1h}
        """)
    write(work, f"devices/{device}.yaml", f"""
        apiVersion: fleet/v1
        kind: Device
        metadata: {{name: {device}}}
        spec: {{}}
        """)
    if model:
        version: dict[str, object] = {"command": ["python3", "-c", "import time; time.sleep(3600)"],
                                      "health": {"aliveSeconds": 0.2}}
        if port is not None:
            version["port"] = port
        write(work, "models/sleeper.yaml", yaml.safe_dump(
            {"apiVersion": "fleet/v1", "kind": "Model", "metadata": {"name": "sleeper"},
             "spec": {"versions": {"1.0": version}}}))
        write(work, "groups/all.yaml", yaml.safe_dump(
            {"apiVersion": "fleet/v1", "kind": "Group", "metadata": {"name": "all"},
             "spec": {"models": [{"name": "sleeper", "version": "1.0"}],
                      "detectors": [{"detector_id": "det_door00000000000000000000000", "model": "sleeper",
                                     "confidence_threshold": 0.8}]}}))
    git_init(work)
    bare = root / "fleet.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def head(bare: Path) -> str:
    return git(bare, "rev-parse", "main")


def agent_config(root: Path, repo: Path | str, device: str = "edge1", **extra: object) -> Path:
    path = root / f"agent-{device}.yaml"
    doc: dict[str, object] = {"device": device, "repo": {"url": str(repo)}, "dataDir": str(root / f"data-{device}"),
                              "interval": 1, "jitter": 0, "runtimeOptions": {"restartBackoff": 0.2, "stopGrace": 2}}
    doc.update(extra)
    path.write_text(yaml.safe_dump(doc))
    return path
