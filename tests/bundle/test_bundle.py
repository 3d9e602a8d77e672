"""Air-gapped updates end to end: a device with no route to any git server or registry gets new model
versions from bundles, refuses old or repeated ones, and its status returns through import-status."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.main import main
from tests.agentlab import Lab, publish, stop_workloads
from tests.bundle.conftest import apply, create, offline_config, sign_every_commit, signing_key
from tests.fleetutil import git
from tests.services.registry import run_registry

pytestmark = pytest.mark.integration


def healthz(lab: Lab) -> dict[str, object]:
    deadline = time.time() + 10
    while time.time() < deadline:
        code, body = lab.get("/healthz")
        if code == 200:
            doc = json.loads(body)
            assert isinstance(doc, dict)
            return doc
        time.sleep(0.1)
    raise AssertionError("the model never answered /healthz")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with stop_workloads(tmp_path / "data-dev1"):
        yield Lab(tmp_path, "", {})


def test_offline_device_updates_from_bundles_and_status_returns(
        lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    media = tmp_path / "usb"
    media.mkdir()
    key, signers = signing_key(tmp_path)
    sign_every_commit(monkeypatch, key)
    with run_registry(tmp_path / "registry") as reg:
        lab.refs = {v: publish(reg.address, tmp_path, "models/counter", v, f"weights {v}".encode() * 5000)
                    for v in ("1.0", "2.0")}
        lab.setup()
        first = git(lab.server, "rev-parse", "main")
        assert create(lab, media / "b1.tar", "--device", "dev1", "--sign-key", str(key)) == 0
        lab.commit({"groups/all.yaml": lab.group_yaml("2.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}])})
        second = git(lab.server, "rev-parse", "main")
        assert create(lab, media / "b2.tar", "--group", "all", "--since", first, "--sign-key", str(key)) == 0
    # the registry is gone, and the device's repo URL points at a port nothing listens on
    config = offline_config(lab, trust={"allowedSigners": str(signers)})
    capsys.readouterr()

    assert apply(config, media / "b1.tar") == 0
    out = capsys.readouterr().out
    assert "signed by admin@fleet" in out and "dev1: Ready" in out
    assert healthz(lab)["version"] == "1.0"
    assert (media / "status-dev1.tar").is_file()

    assert apply(config, media / "b1.tar") == 1
    assert "already applied" in capsys.readouterr().err

    assert apply(config, media / "b2.tar") == 0
    assert healthz(lab)["version"] == "2.0"
    state = json.loads((lab.data_dir / "state.json").read_text())
    assert state["appliedCommit"] == second

    assert apply(config, media / "b1.tar") == 1
    err = capsys.readouterr().err
    assert "older than the bundle applied last" in err
    assert healthz(lab)["version"] == "2.0"

    # back at the office: the status the device wrote onto the medium reaches the server
    assert main(["bundle", "import-status", str(media / "status-dev1.tar"), "--repo", str(lab.server)]) == 0
    assert "pushed" in capsys.readouterr().out
    status = lab.status()
    assert status["appliedCommit"] == second and status["phase"] == "Ready"
    assert main(["status", "--repo", str(lab.server), "--format", "json"]) == 0
    rows = {r["device"]: r for r in json.loads(capsys.readouterr().out)["devices"]}
    assert rows["dev1"]["convergence"] == "converged" and rows["dev1"]["phase"] == "Ready"
    assert rows["dev2"]["convergence"] == "never seen"
    tip = git(lab.server, "rev-parse", "refs/heads/status/dev1")
    # importing the same file again changes nothing
    assert main(["bundle", "import-status", str(media / "status-dev1.tar"), "--repo", str(lab.server)]) == 0
    assert "already on the server" in capsys.readouterr().out
    assert git(lab.server, "rev-parse", "refs/heads/status/dev1") == tip
    assert yaml.safe_load(git(lab.server, "show", f"{tip}:status.yaml"))["device"] == "dev1"
