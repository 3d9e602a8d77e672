"""The docker runtime, on a real dockerd (tests/services/dockerd.py) and a real registry.

Unit tests cover the pure translation (memory sizes, GPU device requests, container settings, stats maths).
Integration tests share one dockerd and one busybox image per session; each test removes its containers.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.credentials import CredentialStore
from reconciler.errors import AuthError, DaemonUnreachable, InvalidConfig, NotFound, RuntimeUnavailable, Stalled
from reconciler.model import HealthCheck, Observed, RegistryConfig, Resources, Workload
from reconciler.runtimes import get_runtime
from reconciler.runtimes.docker import DockerRuntime, _trim_logs
from reconciler.runtimes.docker_observation import _cpu_percent, _epoch, _memory_bytes
from reconciler.runtimes.docker_spec import (
    DETECTORS_MOUNT,
    L_DEVICE,
    L_MANAGED,
    L_MODEL,
    L_SPEC,
    L_VERSION,
    MODEL_MOUNT,
    container_spec,
    device_requests,
    observed_settings,
    settings,
)
from tests.services.dockerd import DockerDaemon, build_busybox_image, push_image
from tests.services.registry import RegistryServer, free_port, run_registry

# -- unit: pure translation ------------------------------------------------------------------------------


def test_device_requests() -> None:
    assert device_requests("all") == [{"count": -1, "capabilities": [["gpu"]]}]
    assert device_requests(2) == [{"count": 2, "capabilities": [["gpu"]]}]
    assert device_requests("1") == [{"count": 1, "capabilities": [["gpu"]]}]
    assert device_requests(0) == []
    assert device_requests(None) == []
    for bad in ("some", -1):
        with pytest.raises(InvalidConfig, match=r"resources\.gpus"):
            device_requests(bad)


def _workload(**kw: Any) -> Workload:
    base: dict[str, Any] = dict(device="edge-1", model="detector", version="1.0", model_dir="/srv/models/a",
                                detectors_config="/srv/detectors.yaml", image="reg:5000/m@sha256:" + "a" * 64)
    base.update(kw)
    return Workload(**base)


def test_container_spec_carries_env_mounts_labels_and_resources() -> None:
    w = _workload(command=("serve", "--fast"), env=(("LOG", "debug"),), port=8080,
                  resources=Resources(cpus=0.5, memory="1536m", gpus="all"), storage_dir="/srv/jobs")
    spec = container_spec(w, "127.0.0.1", "unless-stopped")
    assert spec["image"] == w.image
    assert spec["command"] == ["serve", "--fast"]
    assert spec["environment"] == {"LOG": "debug", "MODEL_NAME": "detector", "MODEL_VERSION": "1.0",
                                   "MODEL_DIR": MODEL_MOUNT, "DETECTORS_CONFIG": DETECTORS_MOUNT}
    assert spec["mounts"] == [
        {"Type": "bind", "Source": "/srv/models/a", "Target": MODEL_MOUNT, "ReadOnly": True},
        {"Type": "bind", "Source": "/srv/detectors.yaml", "Target": DETECTORS_MOUNT, "ReadOnly": True},
        {"Type": "bind", "Source": "/srv/jobs", "Target": "/srv/jobs", "ReadOnly": False},  # storage, same place
    ]
    assert spec["ports"] == {"8080/tcp": ("127.0.0.1", 8080)}  # the model's own port, not one Docker picks
    assert container_spec(replace(w, publish_address="0.0.0.0"), "127.0.0.1", "no")["ports"] == {
        "8080/tcp": ("0.0.0.0", 8080)}
    assert spec["nano_cpus"] == 500_000_000
    assert spec["mem_limit"] == 1536 * 2**20
    assert spec["device_requests"] == [{"count": -1, "capabilities": [["gpu"]]}]
    assert spec["restart_policy"] == {"Name": "unless-stopped"}
    labels = spec["labels"]
    assert (labels[L_MANAGED], labels[L_DEVICE], labels[L_MODEL], labels[L_VERSION], labels[L_SPEC]) == (
        "true", "edge-1", "detector", "1.0", w.spec_hash)


def test_container_spec_without_image_is_a_config_error() -> None:
    with pytest.raises(InvalidConfig, match=r"model detector version 1\.0: runtime docker needs an image"):
        container_spec(_workload(image=None), "127.0.0.1", "unless-stopped")


def test_settings_match_what_docker_inspect_reports() -> None:
    w = _workload(port=8080, resources=Resources(cpus=1.5, memory="1g", gpus=2))
    inspect = {"HostConfig": {
        "NanoCpus": 1_500_000_000, "Memory": 2**30, "RestartPolicy": {"Name": "on-failure"},
        "DeviceRequests": [{"Driver": "", "Count": 2, "Capabilities": [["gpu"]]}],
        "PortBindings": {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]},
        "Mounts": [{"Type": "bind", "Source": "/srv/models/a", "Target": MODEL_MOUNT, "ReadOnly": True},
                   {"Type": "bind", "Source": "/srv/detectors.yaml", "Target": DETECTORS_MOUNT,
                    "ReadOnly": True}],
    }}
    wanted = json.loads(json.dumps(settings(w, "0.0.0.0", "on-failure")))
    assert observed_settings(inspect) == wanted
    inspect["HostConfig"]["Memory"] = 2**29
    assert observed_settings(inspect)["memory"] != wanted["memory"]


def test_stats_maths_as_docker_stats() -> None:
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000}, "system_cpu_usage": 20_000_000,
                      "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 10_000_000},
        "memory_stats": {"usage": 10_000, "stats": {"cache": 4_000}},
    }
    assert _cpu_percent(stats) == 40.0
    assert _memory_bytes(stats) == 6_000
    assert _cpu_percent({"cpu_stats": {}, "precpu_stats": {}}) is None
    assert _memory_bytes({"memory_stats": {}}) is None


def test_epoch_and_log_trimming() -> None:
    assert _epoch("2024-05-01T10:00:00.123456789Z") == pytest.approx(1714557600.123456)
    assert _epoch("0001-01-01T00:00:00Z") == 0.0
    text = "\n".join(f"line {i}" for i in range(50)) + "\n" + "x" * 500
    trimmed = _trim_logs(text).splitlines()
    assert len(trimmed) == 10 and trimmed[0] == "line 41" and trimmed[-1].endswith("...")
    assert len(trimmed[-1]) == 200


# -- integration: a real dockerd -------------------------------------------------------------------------

PORT = free_port()  # docker publishes a model's port on the same host port: never a fixed one on a shared host
HTTPD = ("httpd", "-f", "-p", str(PORT), "-h", MODEL_MOUNT)


@pytest.fixture(scope="module")
def pushed(dockerd: DockerDaemon, busybox_image: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[RegistryServer, str]]:
    """A plain-HTTP registry holding the busybox image; yields (registry, repo@sha256 reference)."""
    with run_registry(tmp_path_factory.mktemp("docker-runtime-registry")) as server:
        ref = push_image(dockerd, busybox_image, f"{server.address}/models/busybox:1")
        yield server, ref


@pytest.fixture
def runtime(dockerd: DockerDaemon, tmp_path: Path) -> Iterator[DockerRuntime]:
    rt = get_runtime("docker", tmp_path / "data", {"dockerHost": dockerd.host, "stopTimeout": 1})
    assert isinstance(rt, DockerRuntime)
    yield rt
    for observed in rt.observe("edge-1", with_stats=False) + rt.observe("edge-2", with_stats=False):
        rt.stop(observed)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models" / "detector" / "1.0"
    d.mkdir(parents=True)
    (d / "healthz").write_text("ok\n")
    (d / "weights.bin").write_bytes(b"\0" * 16)
    return d


def _deploy(tmp_path: Path, model_dir: Path, image: str, **kw: Any) -> Workload:
    detectors = tmp_path / "detectors.yaml"
    detectors.write_text("detectors: []\n")
    base: dict[str, Any] = dict(device="edge-1", model="detector", version="1.0", model_dir=str(model_dir),
                                detectors_config=str(detectors), image=image, command=HTTPD, port=PORT,
                                health=HealthCheck(path="/healthz", timeout=10))
    base.update(kw)
    return Workload(**base)


def _inspect(dockerd: DockerDaemon, handle: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(dockerd.docker("inspect", handle))
    return data[0]


@pytest.mark.integration
def test_first_deploy_runs_the_container_as_declared(
    dockerd: DockerDaemon, runtime: DockerRuntime, pushed: tuple[RegistryServer, str], tmp_path: Path,
    model_dir: Path,
) -> None:
    w = _deploy(tmp_path, model_dir, pushed[1], resources=Resources(cpus=0.5, memory="64m"),
                env=(("LOG_LEVEL", "debug"),))
    observed = runtime.start(w)
    assert (observed.model, observed.version, observed.spec_hash, observed.state) == (
        "detector", "1.0", w.spec_hash, "running")
    assert runtime.check_health(w, observed).healthy

    info = _inspect(dockerd, observed.handle)
    assert info["State"]["Running"] is True
    assert info["Config"]["Labels"][L_DEVICE] == "edge-1"
    assert info["Config"]["Labels"][L_SPEC] == w.spec_hash
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["Memory"] == 64 * 2**20
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert [b["HostIp"] for b in info["NetworkSettings"]["Ports"][f"{PORT}/tcp"]] == ["127.0.0.1"]
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts[MODEL_MOUNT]["RW"] is False and mounts[MODEL_MOUNT]["Source"] == str(model_dir)
    assert mounts[DETECTORS_MOUNT]["RW"] is False
    assert {"MODEL_NAME=detector", "MODEL_VERSION=1.0", f"MODEL_DIR={MODEL_MOUNT}",
            f"DETECTORS_CONFIG={DETECTORS_MOUNT}", "LOG_LEVEL=debug"} <= set(info["Config"]["Env"])
    # The model directory is really read-only inside the container.
    write = f"(echo x > {MODEL_MOUNT}/new) 2>&1; echo rc=$?"
    out = dockerd.docker("exec", observed.handle, "sh", "-c", write, check=False)
    assert "Read-only file system" in out and "rc=1" in out
    assert not (model_dir / "new").exists()

    [seen] = runtime.observe("edge-1")
    assert seen.handle == observed.handle and seen.state == "running" and not seen.drifted
    assert seen.started_at > time.time() - 120
    assert seen.memory_bytes is not None and seen.memory_bytes > 0
    assert seen.cpu_percent is not None
    assert f"{PORT}/tcp on 127.0.0.1:{PORT}" in seen.message


@pytest.mark.integration
def test_upgrade_then_downgrade_replaces_the_container(
    runtime: DockerRuntime, pushed: tuple[RegistryServer, str], tmp_path: Path, model_dir: Path,
) -> None:
    v1 = _deploy(tmp_path, model_dir, pushed[1], version="1.0")
    v2 = _deploy(tmp_path, model_dir, pushed[1], version="2.0")
    old = runtime.start(v1)
    assert runtime.check_health(v1, old).healthy
    for new_w, old_obs in ((v2, old), (v1, None)):
        if old_obs is None:  # downgrade: from whatever 2.0 container runs now
            [old_obs] = runtime.observe("edge-1", with_stats=False)
        # the port is published on the same host port: one container holds it, the old one goes first
        runtime.stop(old_obs)
        new = runtime.start(new_w)
        assert runtime.check_health(new_w, new).healthy
        now = runtime.observe("edge-1", with_stats=False)
        assert [(o.version, o.handle) for o in now] == [(new_w.version, new.handle)]


@pytest.mark.integration
def test_failed_http_health_check_reports_the_containers_last_log_lines(
    runtime: DockerRuntime, pushed: tuple[RegistryServer, str], tmp_path: Path, model_dir: Path,
) -> None:
    good = _deploy(tmp_path, model_dir, pushed[1])
    running = runtime.start(good)
    assert runtime.check_health(good, running).healthy
    other = free_port()  # the good one still holds PORT
    script = f"echo 'loading weights: checksum mismatch'; exec httpd -f -p {other} -h /tmp"
    w = _deploy(tmp_path, model_dir, pushed[1], version="3.0", health=HealthCheck(path="/healthz", timeout=2),
                command=("sh", "-c", script), port=other)
    observed = runtime.start(w)
    result = runtime.check_health(w, observed)
    assert not result.healthy
    assert "model detector version 3.0: health check failed" in result.message
    assert "HTTP 404" in result.message
    assert "loading weights: checksum mismatch" in result.message
    # Rolling back is removing the new one: the old version never stopped serving.
    runtime.stop(observed)
    [left] = runtime.observe("edge-1", with_stats=False)
    assert (left.handle, left.version, left.state) == (running.handle, "1.0", "running")
    assert runtime.check_health(good, left).healthy


@pytest.mark.integration
def test_insecure_registry_the_daemon_does_not_allow_is_a_clear_config_error(
    dockerd: DockerDaemon, tmp_path: Path, model_dir: Path,
) -> None:
    registry = RegistryConfig("lab", "registry.lab.invalid", 5000, skip_tls_verify=True)
    w = _deploy(tmp_path, model_dir, "registry.lab.invalid:5000/m@sha256:" + "1" * 64, registry=registry)
    with pytest.raises(InvalidConfig, match=r"add \"registry\.lab\.invalid:5000\" to daemon\.json"):
        DockerRuntime(tmp_path, {"dockerHost": dockerd.host}).start(w)


@pytest.mark.integration
def test_alive_and_image_healthcheck_modes(
    dockerd: DockerDaemon, runtime: DockerRuntime, busybox_image: str, tmp_path: Path, model_dir: Path,
) -> None:
    # No HTTP path and no image HEALTHCHECK: it must stay up for alive_seconds.
    alive = _deploy(tmp_path, model_dir, busybox_image, command=("sleep", "300"), port=None,
                    health=HealthCheck(alive_seconds=0.5))
    assert runtime.check_health(alive, runtime.start(alive)).healthy
    crash = _deploy(tmp_path, model_dir, busybox_image, version="9", port=None,
                    health=HealthCheck(alive_seconds=3),
                    command=("sh", "-c", "echo 'fatal: no accelerator'; exit 3"))
    result = runtime.check_health(crash, runtime.start(crash))
    assert not result.healthy and "fatal: no accelerator" in result.message
    # The image's own HEALTHCHECK decides when there is no HTTP path.
    build_busybox_image(dockerd, tmp_path, "reconciler-test/busybox:hc",
                        ['HEALTHCHECK --interval=1s --timeout=1s CMD ["cat", "/model/healthz"]'])
    hc = _deploy(tmp_path, model_dir, "reconciler-test/busybox:hc", version="hc", command=("sleep", "300"),
                 port=None, health=HealthCheck(timeout=15))
    result = runtime.check_health(hc, runtime.start(hc))
    assert result.healthy and "HEALTHCHECK" in result.message


@pytest.mark.integration
def test_drift_by_hand_is_reported(
    dockerd: DockerDaemon, runtime: DockerRuntime, busybox_image: str, tmp_path: Path, model_dir: Path,
) -> None:
    w = _deploy(tmp_path, model_dir, busybox_image, resources=Resources(memory="64m"))
    observed = runtime.start(w)
    dockerd.docker("update", "--memory", "128m", "--memory-swap", "256m", observed.handle)
    [seen] = runtime.observe("edge-1")
    assert seen.drifted and seen.state == "running" and "changed by hand: memory" in seen.message

    dockerd.docker("kill", observed.handle)
    [seen] = runtime.observe("edge-1")
    assert seen.drifted and seen.state == "exited" and "is exited" in seen.message

    dockerd.docker("rm", "-f", observed.handle)
    assert runtime.observe("edge-1") == []
    runtime.stop(observed)  # already gone: not an error


@pytest.mark.integration
def test_a_new_runtime_instance_adopts_running_containers(
    dockerd: DockerDaemon, runtime: DockerRuntime, busybox_image: str, tmp_path: Path, model_dir: Path,
) -> None:
    w = _deploy(tmp_path, model_dir, busybox_image)
    observed = runtime.start(w)
    restarted = DockerRuntime(tmp_path / "data", {"dockerHost": dockerd.host, "stopTimeout": 1})
    [adopted] = restarted.observe("edge-1")
    assert (adopted.handle, adopted.spec_hash, adopted.version) == (observed.handle, w.spec_hash, "1.0")
    # A tag-only reference: the digest it resolved to is reported (a local-only image has just its id).
    assert f"image {busybox_image} resolved to sha256:" in adopted.message
    assert restarted.check_health(w, adopted).healthy
    restarted.stop(adopted)
    assert restarted.observe("edge-1") == []


@pytest.mark.integration
def test_foreign_containers_are_never_returned_or_removed(
    dockerd: DockerDaemon, runtime: DockerRuntime, busybox_image: str, tmp_path: Path, model_dir: Path,
) -> None:
    foreign = dockerd.docker("run", "-d", "--label", f"{L_DEVICE}=edge-1", busybox_image, "sleep", "300")
    foreign = foreign.strip()
    other_device = runtime.start(_deploy(tmp_path, model_dir, busybox_image, device="edge-2"))
    try:
        assert runtime.observe("edge-1") == []
        assert [o.handle for o in runtime.observe("edge-2")] == [other_device.handle]
        with pytest.raises(Stalled, match="does not carry our labels"):
            runtime.stop(Observed("x", "1", "h", foreign, "running"))
        assert _inspect(dockerd, foreign)["State"]["Running"] is True
    finally:
        dockerd.docker("rm", "-f", foreign)


@pytest.mark.integration
def test_reload_sends_sighup(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path, model_dir: Path,
) -> None:
    script = "trap 'echo detectors reloaded' HUP; echo ready; while true; do sleep 0.1; done"
    w = _deploy(tmp_path, model_dir, busybox_image, command=("sh", "-c", script), port=None,
                health=HealthCheck(alive_seconds=0.3))
    observed = runtime.start(w)
    assert runtime.check_health(w, observed).healthy
    runtime.reload(observed)
    deadline = time.monotonic() + 5
    while "detectors reloaded" not in runtime.logs(observed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "detectors reloaded" in runtime.logs(observed)


@pytest.mark.integration
def test_gpu_request_without_a_gpu_runtime_is_a_clear_terminal_error(
    runtime: DockerRuntime, busybox_image: str, tmp_path: Path, model_dir: Path,
) -> None:
    # This dockerd accepts DeviceRequests at create but refuses to start without a GPU runtime; the
    # translation itself is covered by test_container_spec_carries_env_mounts_labels_and_resources.
    w = _deploy(tmp_path, model_dir, busybox_image, resources=Resources(gpus="all"))
    with pytest.raises(RuntimeUnavailable, match=r"resources\.gpus asks for GPUs"):
        runtime.start(w)
    assert runtime.observe("edge-1") == []


@pytest.mark.integration
def test_image_is_pulled_by_digest_with_the_devices_credentials(
    dockerd: DockerDaemon, secure_registry: RegistryServer, tmp_path: Path, model_dir: Path,
) -> None:
    server = secure_registry
    build_busybox_image(dockerd, tmp_path, "reconciler-test/busybox:pulled", ["ENV FLAVOUR=pulled"])
    dockerd.docker("login", "-u", server.username or "", "--password-stdin", server.address,
                   input=(server.password or "").encode())
    ref = push_image(dockerd, "reconciler-test/busybox:pulled", f"{server.address}/models/pulled:1")
    dockerd.docker("logout", server.address)
    dockerd.docker("rmi", "reconciler-test/busybox:pulled", f"{server.address}/models/pulled:1")
    assert dockerd.docker("images", "-q", "--filter", "reference=*/models/pulled").strip() == ""
    port = int(server.address.rsplit(":", 1)[1])
    registry = RegistryConfig("fleet", "127.0.0.1", port, credentials_ref="fleet")
    w = _deploy(tmp_path, model_dir, ref, registry=registry, command=("sleep", "300"), port=None,
                health=HealthCheck(alive_seconds=0.2))

    def runtime_with(password: str | None) -> DockerRuntime:
        store = CredentialStore({"fleet": {"username": server.username, "password": password}})
        return DockerRuntime(tmp_path, {"dockerHost": dockerd.host, "stopTimeout": 1, "credentials": store})

    wrong = runtime_with("not-the-password")
    with pytest.raises(AuthError) as refused:
        wrong.start(w)
    assert "not-the-password" not in str(refused.value) and (server.password or "?") not in str(refused.value)

    rt = runtime_with(server.password)
    try:
        observed = rt.start(w)
        assert rt.check_health(w, observed).healthy
        assert ref in _inspect(dockerd, observed.handle)["Config"]["Image"]
        tagged = _deploy(tmp_path, model_dir, f"{server.address}/models/pulled:1", registry=registry,
                         version="tagged", command=("sleep", "300"), port=None)
        rt.start(tagged)
        messages = [o.message for o in rt.observe("edge-1", with_stats=False) if o.version == "tagged"]
        assert messages == [f"image {server.address}/models/pulled:1 resolved to {ref}"]
        assert any(e.method == "GET" and "/manifests/sha256:" in e.path and e.status == 200
                   for e in server.access_entries())
        missing = ref.rsplit("@", 1)[0] + "@sha256:" + "0" * 64
        with pytest.raises(NotFound, match=r"version 1\.0"):
            rt.start(_deploy(tmp_path, model_dir, missing, registry=registry))
    finally:
        for o in rt.observe("edge-1", with_stats=False):
            rt.stop(o)


@pytest.mark.integration
@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "tcp://127.0.0.1:{port}"])
def test_unreachable_daemon_is_transient_and_fast(host: str, tmp_path: Path) -> None:
    rt = DockerRuntime(tmp_path, {"dockerHost": host.format(port=free_port())})
    start = time.monotonic()
    with pytest.raises(DaemonUnreachable, match="no Docker daemon answers at") as err:
        rt.observe("edge-1")
    assert time.monotonic() - start < 6
    assert err.value.reason == "DaemonUnreachable"
