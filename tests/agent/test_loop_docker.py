"""The device agent with ``runtime: docker`` end to end (issue 6): a real dockerd, a real registry holding both
the model artifacts and the images (pinned by digest), a real fleet repository, ``reconciler agent --once``.

Every test checks at teardown that a foreign container (no labels, started by someone else on the same
daemon) is still running, untouched, and that the test left none of our containers behind.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.agent import config as agentconfig
from reconciler.agent.loop import Agent
from reconciler.runtimes.docker_observation import _cpu_percent
from reconciler.runtimes.docker_spec import L_DEVICE, L_MANAGED, L_MODEL, L_VERSION
from tests.agentlab import Lab, publish
from tests.fleetutil import git
from tests.services.dockerd import DockerDaemon, build_busybox_image, push_image
from tests.services.registry import run_registry

VERSIONS = ("1.0", "2.0", "3.0")
# busybox httpd serving what a user would check: the version it runs, the model's weights (read through the
# read-only MODEL_DIR mount), and /healthz unless the version is meant to fail its health check.
SERVE = ("mkdir -p /tmp/w && echo $MODEL_VERSION > /tmp/w/version && {weights} {healthz}"
         " exec httpd -f -p $MODEL_PORT -h /tmp/w")  # MODEL_PORT: published at the same port


def serve_command(healthz: bool = True, delay: float = 0, weights: bool = True) -> list[str]:
    script = SERVE.format(healthz="echo ok > /tmp/w/healthz &&" if healthz else "",
                          weights="cat $MODEL_DIR/weights.bin > /tmp/w/weights &&" if weights else "")
    return ["sh", "-c", (f"sleep {delay:g}; " if delay else "") + script]


@dataclass
class DockerLab(Lab):
    daemon: DockerDaemon | None = None
    images: dict[str, str] = field(default_factory=dict)
    docker_host: str = ""

    def config_path(self, device: str | None = None, **extra: object) -> Path:
        extra.setdefault("dockerHost", self.docker_host)
        # busybox httpd as PID 1 ignores SIGTERM: without this every stop would wait Docker's 10 s
        extra.setdefault("runtimeOptions", {"stopTimeout": 0})
        return super().config_path(device, **extra)

    def docker_model_yaml(self, overrides: dict[str, dict[str, Any]] | None = None) -> str:
        versions: dict[str, Any] = {}
        for v in VERSIONS:
            entry: dict[str, Any] = {
                "artifact": self.refs[v], "image": self.images[v], "command": serve_command(), "port": self.port,
                "health": {"path": "/healthz", "timeout": 10}, "resources": {"cpus": 0.5, "memory": "64m"}}
            entry.update((overrides or {}).get(v, {}))
            entry = {k: value for k, value in entry.items() if value is not None}
            versions[v] = entry
        return yaml.safe_dump({"apiVersion": "fleet/v1", "kind": "Model", "metadata": {"name": "counter"},
                               "spec": {"versions": versions}})

    def fleet_yaml(self, runtime: str = "docker") -> str:
        return textwrap.dedent(f"""\
            apiVersion: fleet/v1
            kind: Fleet
            metadata: {{name: lab}}
            spec:
              defaults: {{runtime: {runtime}}}
              status: {{heartbeatInterval: 1h}}
            """)


# -- the daemon side: what a user sees with `docker ps` and curl ------------------------------------------

def client(daemon: DockerDaemon) -> Any:
    import docker

    return docker.DockerClient(base_url=daemon.host, version="auto", timeout=60)


def ours(daemon: DockerDaemon) -> list[Any]:
    with contextlib.closing(client(daemon)) as c:
        found = c.containers.list(all=True, filters={"label": [f"{L_MANAGED}=true", f"{L_DEVICE}=dev1"]})
        for container in found:
            container.reload()
        return list(found)


def only(daemon: DockerDaemon) -> Any:
    found = ours(daemon)
    assert len(found) == 1, [(c.name, c.status) for c in found]
    return found[0]


def get(container: Any, path: str) -> tuple[int, str]:
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    port = int(env["MODEL_PORT"])
    binding = container.attrs["NetworkSettings"]["Ports"][f"{port}/tcp"][0]
    assert binding["HostPort"] == str(port)  # the model's port, on the same host port (Wallaroo's EDGE_PORT)
    assert binding["HostIp"] == "127.0.0.1"  # published on loopback unless configured otherwise
    try:
        url = f"http://127.0.0.1:{binding['HostPort']}{path}"
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), ""


def serving(container: Any) -> str:
    status, body = get(container, "/version")
    assert status == 200
    return body.strip()


# -- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(dockerd: DockerDaemon, busybox_image: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """One registry with an artifact and an image per version.  Version 2.0's image is then deleted from the
    daemon, so that the agent pulls it by digest from the registry."""
    work = tmp_path_factory.mktemp("docker-world")
    with run_registry(work) as reg:
        refs = {v: publish(reg.address, work, "models/counter", v, f"weights {v}\n".encode() * 100)
                for v in VERSIONS}
        images = {}
        for v in VERSIONS:
            # a distinct config per version, so that each version has its own digest
            build_busybox_image(dockerd, work, f"reconciler-test/counter:{v}", [f"ENV IMAGE_VERSION={v}"])
            images[v] = push_image(dockerd, f"reconciler-test/counter:{v}", f"{reg.address}/images/counter:{v}")
        dockerd.docker("rmi", "reconciler-test/counter:2.0", f"{reg.address}/images/counter:2.0")
        yield reg.address, refs, images


@pytest.fixture(scope="module")
def foreign(dockerd: DockerDaemon, busybox_image: str) -> Iterator[str]:
    """Someone else's container on the same daemon: no labels at all."""
    cid = dockerd.docker("run", "-d", "--name", "not-ours", busybox_image, "sleep", "3600").strip()
    yield cid
    dockerd.docker("rm", "-f", cid, check=False)


@pytest.fixture
def lab(tmp_path: Path, dockerd: DockerDaemon, foreign: str,
        world: tuple[str, dict[str, str], dict[str, str]]) -> Iterator[DockerLab]:
    address, refs, images = world
    started = dockerd.docker("inspect", "-f", "{{.State.StartedAt}}", foreign).strip()
    lab = DockerLab(tmp_path, address, refs, daemon=dockerd, images=images, docker_host=dockerd.host)
    lab.setup()
    lab.commit({"fleet.yaml": lab.fleet_yaml(), "models/counter.yaml": lab.docker_model_yaml(),
                "groups/all.yaml": lab.group_yaml("1.0")}, "docker runtime")
    try:
        yield lab
    finally:
        leftovers = [c.id for c in ours(dockerd)]
        if leftovers:
            dockerd.docker("rm", "-f", *leftovers, check=False)
        # the foreign container went through every test untouched: same container, never restarted
        assert dockerd.docker("inspect", "-f", "{{.State.Running}} {{.State.StartedAt}}", foreign).split() == [
            "true", started]


def model_state(lab: Lab) -> dict[str, Any]:
    models = lab.status()["models"]
    assert isinstance(models, list) and len(models) == 1, models
    return dict(models[0])


def ready_condition(lab: Lab) -> dict[str, Any]:
    conditions = lab.status()["conditions"]
    assert isinstance(conditions, list)
    return dict(next(c for c in conditions if c["type"] == "Ready"))


# -- tests -------------------------------------------------------------------------------------------------

def test_one_shot_stats_report_cpu_since_start_like_the_process_runtime() -> None:
    one_shot = {"cpu_stats": {"cpu_usage": {"total_usage": 2_000_000_000}}, "precpu_stats": {}}
    assert _cpu_percent(one_shot, time.time() - 10) == pytest.approx(20.0, abs=0.5)
    assert _cpu_percent(one_shot) is None  # no start time: no figure rather than a wrong one
    assert _cpu_percent({"cpu_stats": {}, "precpu_stats": {}}, time.time() - 10) is None


@pytest.mark.integration
def test_first_deploy_upgrade_and_downgrade(lab: DockerLab) -> None:
    assert lab.run() == 0
    c = only(lab.daemon)
    labels = c.labels
    assert (labels[L_MODEL], labels[L_VERSION], labels[L_DEVICE]) == ("counter", "1.0", "dev1")
    assert c.attrs["HostConfig"]["NanoCpus"] == 500_000_000
    assert c.attrs["HostConfig"]["Memory"] == 64 * 2**20
    assert c.attrs["Config"]["Image"] == lab.images["1.0"]
    assert serving(c) == "1.0"
    assert get(c, "/weights")[1] == "weights 1.0\n" * 100  # the artifact, mounted read-only at MODEL_DIR
    status = lab.status()
    assert status["phase"] == "Ready" and status["runtime"] == "docker"
    m = model_state(lab)
    assert m["version"] == "1.0" and m["state"] == "running"
    assert m["digest"] == lab.refs["1.0"].split("@")[1]
    assert m["performance"]["startSeconds"] > 0 and m["performance"]["memoryBytes"] > 0

    # upgrade: 2.0's image is not on the daemon, so this pulls it by digest from the registry
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "upgrade")
    assert lab.run() == 0
    c2 = only(lab.daemon)  # the old container is removed
    assert c2.id != c.id and c2.labels[L_VERSION] == "2.0" and serving(c2) == "2.0"
    assert c2.attrs["Config"]["Image"] == lab.images["2.0"]
    assert model_state(lab)["version"] == "2.0"

    lab.commit({"groups/all.yaml": lab.group_yaml("1.0")}, "downgrade")
    assert lab.run() == 0
    c3 = only(lab.daemon)
    assert c3.labels[L_VERSION] == "1.0" and serving(c3) == "1.0"
    m = model_state(lab)
    assert m["version"] == "1.0" and m["digest"] == lab.refs["1.0"].split("@")[1]
    log = git(lab.server, "log", "--format=%s", "refs/heads/status/dev1").splitlines()
    assert len(log) == 3 and all(line.startswith("Ready") for line in log)


@pytest.mark.integration
def test_failed_health_check_rolls_back_to_the_old_version(lab: DockerLab) -> None:
    assert lab.run() == 0
    bad = {"3.0": {"command": serve_command(healthz=False), "health": {"path": "/healthz", "timeout": 2}}}
    lab.commit({"models/counter.yaml": lab.docker_model_yaml(bad), "groups/all.yaml": lab.group_yaml("3.0")},
               "3.0 serves no /healthz")
    assert lab.run() == 1
    status = lab.status()
    assert status["phase"] == "Degraded"
    m = model_state(lab)
    assert m["state"] == "rolledBack" and m["version"] == "1.0" and m["desiredVersion"] == "3.0"
    assert "3.0" in m["lastError"] and "health check failed" in m["lastError"]
    # the model's port is published on publishAddress:port, which one container holds at a time: the old one
    # was stopped for the new one, and after the failure a container of the old version serves again
    now = only(lab.daemon)
    assert now.labels[L_VERSION] == "1.0" and serving(now) == "1.0"
    # held, not retried in a loop for the same desired state
    assert lab.run() == 1
    assert only(lab.daemon).id == now.id and lab.status()["phase"] == "Degraded"


@pytest.mark.integration
def test_container_killed_by_hand_is_restored_and_drift_recorded(lab: DockerLab) -> None:
    assert lab.run() == 0
    assert lab.status()["drift"] == []
    lab.daemon.docker("kill", only(lab.daemon).id)
    assert lab.run() == 0
    c = only(lab.daemon)
    assert c.status == "running" and serving(c) == "1.0"
    drift = lab.status()["drift"]
    assert len(drift) == 1 and drift[0].startswith("counter 1.0:") and "restarted" in drift[0]
    assert lab.status()["phase"] == "Ready"


@pytest.mark.integration
def test_resources_changed_by_hand_are_repaired(lab: DockerLab) -> None:
    assert lab.run() == 0
    lab.daemon.docker("update", "--cpus", "1.5", only(lab.daemon).id)
    assert lab.run() == 0
    c = only(lab.daemon)
    assert c.attrs["HostConfig"]["NanoCpus"] == 500_000_000 and serving(c) == "1.0"
    assert "changed by hand" in lab.status()["drift"][0]


@pytest.mark.integration
def test_agent_killed_mid_deploy_then_next_run_adopts(lab: DockerLab) -> None:
    assert lab.run() == 0
    slow = {"2.0": {"command": serve_command(delay=3), "health": {"path": "/healthz", "timeout": 15}}}
    lab.commit({"models/counter.yaml": lab.docker_model_yaml(slow), "groups/all.yaml": lab.group_yaml("2.0")},
               "slow start")
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "--config", str(lab.config_path()),
                             "--once"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    new = None
    try:
        deadline = time.time() + 30
        while new is None and time.time() < deadline:  # 2.0 runs, its health check waits: cut the power
            new = next((c for c in ours(lab.daemon) if c.labels[L_VERSION] == "2.0" and c.status == "running"), None)
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert new is not None, "the agent never started version 2.0"
    # the port is 2.0's now: 1.0 was stopped before 2.0 started
    assert sorted(c.labels[L_VERSION] for c in ours(lab.daemon)) == ["2.0"]
    assert lab.run() == 0
    c = only(lab.daemon)  # adopted (the same container, not a second one)
    assert c.id == new.id
    # adopted only after passing the health check it never finished: healthy now, and reported as 2.0
    assert get(c, "/healthz")[0] == 200 and serving(c) == "2.0"
    assert model_state(lab)["version"] == "2.0" and lab.status()["phase"] == "Ready"


@pytest.mark.integration
def test_image_only_model_reports_the_image_digest(lab: DockerLab) -> None:
    image_only = {"1.0": {"artifact": None, "command": serve_command(weights=False)}}
    lab.commit({"models/counter.yaml": lab.docker_model_yaml(image_only)}, "no artifact")
    assert lab.run() == 0
    c = only(lab.daemon)
    assert serving(c) == "1.0" and c.attrs["Config"]["Image"] == lab.images["1.0"]
    m = model_state(lab)
    assert m["state"] == "running" and m["digest"] == lab.images["1.0"].split("@")[1]


@pytest.mark.integration
def test_model_removed_from_group_removes_its_container(lab: DockerLab) -> None:
    assert lab.run() == 0
    assert len(ours(lab.daemon)) == 1
    lab.commit({"groups/all.yaml": lab.group_yaml(None)}, "remove counter")
    assert lab.run() == 0
    assert ours(lab.daemon) == []
    assert lab.status()["models"] == [] and lab.status()["phase"] == "Ready"


@pytest.mark.integration
def test_scenario_16_unreachable_docker_daemon_is_transient_retried_with_backoff(
        lab: DockerLab, capsys: pytest.CaptureFixture[str]) -> None:
    nowhere = f"unix://{lab.root}/no-docker.sock"
    lab.docker_host = nowhere
    assert lab.run() == 1
    status = lab.status()
    ready = ready_condition(lab)
    # a daemon that is down (or restarting) may come back: transient, not a terminal Failed
    assert status["phase"] == "Progressing" and ready["reason"] == "DaemonUnreachable"
    assert f"no Docker daemon answers at {nowhere}" in ready["message"]
    assert "Traceback" not in capsys.readouterr().err
    commits = lab.status_commits()
    # the next cycle says the same and records nothing new; the loop retries with backoff, capped at the interval
    agent = Agent(agentconfig.load(lab.config_path()))
    cycle = agent.reconciler.run_once()
    assert not cycle.ready and cycle.error is not None and cycle.error.reason == "DaemonUnreachable"
    assert agent.next_wait(cycle) <= 1.0 + 1.0 and agent.failures == 1
    assert ready_condition(lab) == ready and lab.status_commits() == commits


@pytest.mark.integration
def test_settings_reach_the_container(lab: DockerLab) -> None:
    """storage (a read-write bind mount at the same path) and inferenceLog reach the container's environment; the
    model's port is published on publishAddress:port and status records that address; an s3 credential held by
    the device reaches the container and not the status."""
    jobs = lab.root / "jobs"
    write_job = "echo $MODEL_VERSION > $STORAGE_PATH/written-by-container && "
    command = serve_command()
    command[-1] = write_job + command[-1]
    settings = {"storage": {"driver": "filesystem", "filesystem": {"path": str(jobs)}},
                "inferenceLog": {"localInferenceStorage": "64Mi", "pageSize": 500}}
    fleet_doc = yaml.safe_load(lab.fleet_yaml())
    fleet_doc["spec"]["defaults"].update(settings)
    lab.commit({"fleet.yaml": yaml.safe_dump(fleet_doc),
                "models/counter.yaml": lab.docker_model_yaml({"1.0": {"command": command}})}, "settings")
    assert lab.run() == 0
    c = only(lab.daemon)
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert (env["STORAGE_DRIVER"], env["STORAGE_PATH"]) == ("filesystem", str(jobs))
    assert (env["LOCAL_INFERENCE_STORAGE"], env["INFERENCE_LOG_PAGE_SIZE"]) == (str(64 * 2**20), "500")
    assert (jobs / "written-by-container").read_text() == "1.0\n"  # read-write, at the same place
    binding = c.attrs["NetworkSettings"]["Ports"][f"{lab.port}/tcp"][0]
    assert (binding["HostIp"], binding["HostPort"]) == ("127.0.0.1", str(lab.port))
    assert lab.get("/version")[1] == "1.0\n"  # on the host at publishAddress:port itself
    assert model_state(lab)["address"] == f"127.0.0.1:{lab.port}"

    secret = lab.root / "s3-secret"
    secret.write_text("docker-s3-secret-value\n")
    fleet_doc["spec"]["defaults"]["storage"] = {"driver": "s3", "s3": {
        "region": "eu-west-1", "bucket": "acme", "path": "edge/dev1", "credentialsRef": "lab-s3"}}
    lab.commit({"fleet.yaml": yaml.safe_dump(fleet_doc)}, "s3 storage")
    from reconciler.main import main

    config = lab.config_path(credentials={"lab-s3": {"username": "AKIDDOCKER", "passwordFile": str(secret)}})
    assert main(["agent", "--config", str(config), "--once"]) == 0
    env = dict(e.split("=", 1) for e in only(lab.daemon).attrs["Config"]["Env"])
    assert (env["STORAGE_DRIVER"], env["S3_BUCKET"], env["S3_PREFIX"]) == ("s3", "acme", "edge/dev1")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == ("AKIDDOCKER", "docker-s3-secret-value")
    assert "docker-s3-secret-value" not in git(lab.server, "log", "-p", "refs/heads/status/dev1")
    assert "docker-s3-secret-value" not in (lab.data_dir / "state.json").read_text()
