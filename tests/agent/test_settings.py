"""Every setting that validates reaches the running model (process runtime, real registry, real processes):
storage (filesystem and s3 with its device-held credential), inferenceLog, publishAddress/port, the fleet's
default health timeout, warnings for what the runtime cannot honour, and the layering rule."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from reconciler.fleet.resolve import render_device
from reconciler.fleet.source import DirSource
from reconciler.fleet.view import FleetView
from tests.agentlab import Lab, publish, running_lab
from tests.fleetutil import git, minimal_fleet, write
from tests.services.registry import run_registry

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIDLABEXAMPLE00"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        yield reg.address, {"1.0": publish(reg.address, work, "models/counter", "1.0", b"weights" * 100)}


@pytest.fixture
def lab(tmp_path: Path, artifacts: tuple[str, dict[str, str]]) -> Iterator[Lab]:
    with running_lab(tmp_path, artifacts) as lab:
        yield lab


def dumping_model(lab: Lab, **extra: object) -> str:
    """The counter model, started by a shell that first writes its environment to DUMP."""
    doc = yaml.safe_load(lab.model_yaml({"1.0": {}}))
    version = doc["spec"]["versions"]["1.0"]
    version["command"] = ["sh", "-c", "env > \"$DUMP\"; exec python3 ${MODEL_DIR}/serve.py --port ${MODEL_PORT}"]
    version["env"] = {"DUMP": str(lab.root / "env.txt")}
    version.update(extra)
    return str(yaml.safe_dump(doc))


def fleet(defaults: dict[str, object]) -> str:
    return str(yaml.safe_dump({"apiVersion": "fleet/v1", "kind": "Fleet", "metadata": {"name": "lab"},
                               "spec": {"defaults": {"runtime": "process", **defaults},
                                        "status": {"heartbeatInterval": "1h"}}}))


def workload_env(lab: Lab) -> dict[str, str]:
    deadline = time.time() + 10
    path = lab.root / "env.txt"
    while time.time() < deadline and not (path.exists() and path.read_text().strip()):
        time.sleep(0.05)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.integration
def test_default_storage_inference_log_and_address_reach_the_process(lab: Lab) -> None:
    lab.commit({"fleet.yaml": fleet({"inferenceLog": {"localInferenceStorage": "100m", "pageSize": 1000}}),
                "models/counter.yaml": dumping_model(lab)})
    assert lab.run() == 0
    env = workload_env(lab)
    storage = lab.data_dir / "storage"  # no storage block: filesystem under DATA_DIR/storage
    assert storage.is_dir() and env["STORAGE_DRIVER"] == "filesystem" and env["STORAGE_PATH"] == str(storage)
    assert env["LOCAL_INFERENCE_STORAGE"] == str(100 * 2**20) and env["INFERENCE_LOG_PAGE_SIZE"] == "1000"
    assert env["MODEL_PORT"] == str(lab.port) and env["MODEL_ADDRESS"] == "127.0.0.1"
    model = lab.status()["models"][0]  # type: ignore[index]
    assert model["address"] == f"127.0.0.1:{lab.port}" and "warnings" not in model


@pytest.mark.integration
def test_filesystem_storage_path_is_created_and_writable(lab: Lab) -> None:
    jobs = lab.root / "jobs" / "results"
    lab.commit({"fleet.yaml": fleet({"storage": {"driver": "filesystem", "filesystem": {"path": str(jobs)}}}),
                "models/counter.yaml": dumping_model(lab)})
    assert lab.run() == 0
    assert workload_env(lab)["STORAGE_PATH"] == str(jobs) and jobs.is_dir()
    (jobs / "probe").write_text("ok")  # writable by the workload's user (this agent's user)


@pytest.mark.integration
def test_s3_credential_reaches_the_process_and_nowhere_else(lab: Lab, capsys: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    secret_file = lab.root / "s3-secret"
    secret_file.write_text(SECRET + "\n")
    storage = {"driver": "s3", "s3": {"region": "eu-west-1", "bucket": "acme-results", "path": "edge/dev1",
                                      "credentialsRef": "lab-s3"}}
    lab.commit({"fleet.yaml": fleet({"storage": storage}), "models/counter.yaml": dumping_model(lab)})
    config = lab.config_path(credentials={"lab-s3": {"username": KEY_ID, "passwordFile": str(secret_file)}})
    from reconciler.main import main

    assert main(["agent", "--config", str(config), "--once"]) == 0
    env = workload_env(lab)
    assert (env["STORAGE_DRIVER"], env["S3_REGION"], env["S3_BUCKET"], env["S3_PREFIX"]) == (
        "s3", "eu-west-1", "acme-results", "edge/dev1")
    assert env["AWS_ACCESS_KEY_ID"] == KEY_ID and env["AWS_SECRET_ACCESS_KEY"] == SECRET
    assert "STORAGE_PATH" not in env
    # never in the agent's state, the runtime's files, the status branch, its messages or the output
    for path in lab.data_dir.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".log"):
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in git(lab.server, "log", "-p", "refs/heads/status/dev1")
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err + caplog.text


@pytest.mark.integration
def test_missing_s3_credential_is_a_clear_device_side_error(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    storage = {"driver": "s3", "s3": {"region": "eu-west-1", "bucket": "b", "path": "p", "credentialsRef": "lab-s3"}}
    lab.commit({"fleet.yaml": fleet({"storage": storage}), "models/counter.yaml": dumping_model(lab)})
    assert lab.run() == 1
    ready = next(c for c in lab.status()["conditions"] if c["type"] == "Ready")  # type: ignore[attr-defined]
    assert ready["status"] == "False" and ready["reason"] == "NotFound"
    assert "storage.s3.credentialsRef: credentialsRef 'lab-s3' is not defined on this device" in ready["message"]
    assert "RECONCILER_CRED_LAB_S3_USERNAME" in ready["message"]
    assert not (lab.root / "env.txt").exists()  # nothing started half-configured


@pytest.mark.integration
def test_setting_the_runtime_cannot_honour_is_a_warning_on_the_model(lab: Lab) -> None:
    lab.commit({"models/counter.yaml": dumping_model(lab, resources={"gpus": 1})})
    assert lab.run() == 0
    model = lab.status()["models"][0]  # type: ignore[index]
    assert model["state"] == "running"
    assert model["warnings"] == ["resources.gpus 1 is not honoured by the process runtime (it cannot grant or "
                                 "isolate GPUs): use runtime docker"]


def test_layering_defaults_then_version_then_groups_then_device(tmp_path: Path) -> None:
    """fleet defaults < the model version's own values < groups by priority < the device (README)."""
    root = minimal_fleet(tmp_path / "fleet")
    write(root, "fleet.yaml", """
        apiVersion: fleet/v1
        kind: Fleet
        metadata: {name: test}
        spec:
          registries:
            repo: {host: 127.0.0.1, port: 5000}
          defaults:
            runtime: process
            registry: repo
            resources: {cpus: 1, memory: 128m}
            env: {LEVEL: fleet, FROM_FLEET: "1"}
          agent: {healthTimeout: 45}
        """)
    text = (root / "models/m.yaml").read_text().replace(
        'command: [sleep, "100"]}', 'command: [sleep, "100"], resources: {memory: 256m, cpus: 2}, env: {LEVEL: version}}', 1)
    (root / "models/m.yaml").write_text(text)
    write(root, "groups/g.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: g}
        spec:
          members: [d1, d2]
          models: [{name: m, version: "1.0"}]
          config: {resources: {memory: 512m}, env: {LEVEL: group}}
        """)
    write(root, "devices/d1.yaml", """
        apiVersion: fleet/v1
        kind: Device
        metadata: {name: d1}
        spec: {config: {resources: {memory: 1g}, env: {LEVEL: device}}}
        """)
    d1 = render_device(FleetView(DirSource(root)), "d1").models[0]
    d2 = render_device(FleetView(DirSource(root)), "d2").models[0]
    assert (d1.resources.memory, d1.resources.cpus, dict(d1.env)) == ("1g", 2, {"LEVEL": "device", "FROM_FLEET": "1"})
    assert (d2.resources.memory, dict(d2.env)["LEVEL"]) == ("512m", "group")
    assert d1.health.timeout == 45.0  # spec.agent.healthTimeout is the default health timeout
    (root / "groups/g.yaml").write_text((root / "groups/g.yaml").read_text().replace(
        "  config: {resources: {memory: 512m}, env: {LEVEL: group}}\n", ""))
    d2 = render_device(FleetView(DirSource(root)), "d2").models[0]
    assert (d2.resources.memory, dict(d2.env)["LEVEL"]) == ("256m", "version")  # the version beats the defaults
