"""A simulated fleet of 20 real agents (in-process ``Reconciler`` objects, the process runtime, the example
model server) over a file:// repository, and the real rollout controller between their rounds: a healthy
rollout advances to complete, a version that fails its health check aborts at the first step, an offline
device holds a step at minReporting, a maintenance window keeps a device from switching, and the golden-set
gate rolls back a version that answers wrongly."""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from reconciler.agent import config as agentconfig
from reconciler.agent.reconcile import Reconciler
from reconciler.fleet.rollouts import bucket
from reconciler.git.mirror import FleetMirror
from reconciler.main import main
from reconciler.rollout.controller import Controller
from tests.agentlab import publish, stop_workloads
from tests.fleetutil import git, write
from tests.services.registry import run_registry

pytestmark = pytest.mark.integration

DEVICES = [f"d{i:02d}" for i in range(20)]
GOLDEN = b'{"request": {"image": "door.jpg"}, "expected": {"label": "person", "confidence": 0.9}}\n'


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        # versions 1.0 to 3.0 share one artifact (they differ by MODEL_VERSION, and 3.0 by FAIL_HEALTH);
        # 4.0's weights answer "cat", which its golden set does not expect
        good = publish(reg.address, work, "models/counter", "good", b"label:person\n", {"golden.jsonl": GOLDEN})
        cat = publish(reg.address, work, "models/counter", "cat", b"label:cat\n", {"golden.jsonl": GOLDEN})
        yield reg.address, {"1.0": good, "2.0": good, "3.0": good, "4.0": cat, "5.0": good}


def free_base(count: int) -> int:
    """A port with ``count`` free ports after it (each device adds its portOffset)."""
    for base in range(21000, 60000, 97):
        try:
            socks = []
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free port range")


class Fleet:
    def __init__(self, root: Path, refs: dict[str, str]) -> None:
        self.root, self.work, self.server = root, root / "work", root / "server.git"
        self.port = free_base(len(DEVICES))
        versions = {}
        for v, ref in refs.items():
            versions[v] = {"artifact": ref, "command": ["python3", "${MODEL_DIR}/serve.py", "--port", "${MODEL_PORT}"],
                           "port": self.port, "health": {"path": "/healthz", "timeout": 5,
                                                         "golden": {"file": "golden.jsonl", "path": "/infer",
                                                                    "tolerance": 0.05}}}
        versions["3.0"]["env"] = {"FAIL_HEALTH": "1"}  # exits at once: fails its health check
        versions["3.0"]["health"]["timeout"] = 1.5
        write(self.work, "fleet.yaml", "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: sim}\n"
                                       "spec: {defaults: {runtime: process}, status: {heartbeatInterval: 1h}}\n")
        write(self.work, "models/counter.yaml", yaml.safe_dump(
            {"apiVersion": "fleet/v1", "kind": "Model", "metadata": {"name": "counter"}, "spec": {"versions": versions}}))
        write(self.work, "groups/all.yaml", "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: all}\nspec:\n"
                                            "  models:\n    - name: counter\n      version: \"1.0\"\n")
        for i, d in enumerate(DEVICES):
            self.device_file(d, {"portOffset": i})
        git(self.work, "init", "-q", "-b", "main")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", "fleet of 20")
        git(self.root, "clone", "-q", "--bare", str(self.work), str(self.server))
        git(self.work, "remote", "add", "origin", str(self.server))
        self.agents: dict[str, Reconciler] = {}
        for d in DEVICES:
            cfg = root / f"agent-{d}.yaml"
            cfg.write_text(yaml.safe_dump({"device": d, "repo": {"url": f"file://{self.server}"},
                                           "dataDir": str(root / f"data-{d}"), "interval": 1, "jitter": 0,
                                           "runtimeOptions": {"restartBackoff": 0.2, "stopGrace": 2}}))
            self.agents[d] = Reconciler(agentconfig.load(cfg))
        self.controller = Controller(FleetMirror(root / "controller.git", f"file://{self.server}", "main"))
        self.offline: set[str] = set()

    def device_file(self, d: str, config: dict[str, object]) -> None:
        write(self.work, f"devices/{d}.yaml", yaml.safe_dump(
            {"apiVersion": "fleet/v1", "kind": "Device", "metadata": {"name": d}, "spec": {"config": config}}))

    def commit(self, message: str) -> None:
        git(self.work, "add", "-A")
        git(self.work, "commit", "-qm", message)
        git(self.work, "push", "-q", "origin", "main")

    def round(self) -> dict[str, bool]:
        """Every online agent runs one pass, a few at a time as devices would; device -> it ended Ready."""
        online = [d for d in self.agents if d not in self.offline]
        with ThreadPoolExecutor(max_workers=5) as pool:
            return dict(zip(online, pool.map(lambda d: self.agents[d].run_once().ready, online), strict=True))

    def decide(self) -> list[str]:
        before = git(self.server, "rev-parse", "main")
        self.controller.run_once(time.time())
        git(self.work, "pull", "-q", "--ff-only", "origin", "main")
        out = git(self.server, "log", "--format=%s", f"{before}..main")
        return out.splitlines() if out else []

    def status(self, d: str) -> dict[str, object]:
        doc = yaml.safe_load(git(self.server, "show", f"status/{d}:status.yaml"))
        assert isinstance(doc, dict)
        return doc

    def model(self, d: str) -> dict[str, object]:
        models = self.status(d)["models"]
        assert isinstance(models, list)
        return dict(models[0])

    def answers(self, d: str) -> str:
        """The version the device's model server says it is (asked over HTTP, not from the status)."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port + DEVICES.index(d)}/healthz", timeout=5) as r:
            return str(json.loads(r.read())["version"])

    def start_rollout(self, name: str, src: str, dst: str, steps: str, gates: str, extra: str = "") -> None:
        write(self.work, f"rollouts/{name}.yaml", f"""
            apiVersion: fleet/v1
            kind: Rollout
            metadata: {{name: {name}}}
            spec: {{group: all, model: counter, from: "{src}", to: "{dst}", steps: {steps}, gates: {gates}{extra}}}
            """)
        self.commit(f"roll out counter {dst}")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, artifacts: tuple[str, dict[str, str]]) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    f = Fleet(root, artifacts[1])
    with stop_workloads(*(root / f"data-{d}" for d in DEVICES)):
        assert all(f.round().values())
        assert {f.answers(d) for d in DEVICES} == {"1.0"}
        yield f


def test_healthy_rollout_held_by_an_offline_device_and_a_window_then_complete(
        fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    name = "counter-2"
    half = [d for d in DEVICES if bucket(name, d) < 50 and d not in ("d00", "d01")]
    rest = [d for d in DEVICES if d not in half and d not in ("d00", "d01")]
    offline, windowed = half[0], rest[0]
    # a window that is closed now (it opens in two hours, UTC)
    opens = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    window = {"start": opens.strftime("%H:%M"), "end": (opens + dt.timedelta(hours=1)).strftime("%H:%M")}
    fleet.device_file(windowed, {"portOffset": DEVICES.index(windowed), "activation": {"windows": [window]}})
    fleet.commit(f"maintenance window for {windowed}")
    assert all(fleet.round().values())
    fleet.start_rollout(name, "1.0", "2.0", "[{devices: [d00, d01]}, {percent: 50}, {percent: 100}]",
                        "{maxFailed: 0, minReporting: 100}")
    assert fleet.decide() == []  # nobody has reported on 2.0 yet
    fleet.round()
    assert [fleet.answers(d) for d in DEVICES].count("2.0") == 2
    [msg] = fleet.decide()
    assert msg.startswith(f"rollout {name}: advance to step 2/3 (50%)") and "cohort 2: 2 healthy" in msg

    fleet.offline = {offline}
    fleet.round()
    assert fleet.decide() == []  # held: the offline device is unknown, not failed
    capsys.readouterr()
    assert main(["rollout", "status", "--repo", str(fleet.server), name]) == 0
    out = capsys.readouterr().out
    assert f"< minReporting 100% (cohort {len(half) + 2}: {len(half) + 1} healthy, 0 failed, 1 unknown)" in out
    assert f"{offline:<24} unknown" in out
    fleet.offline = set()
    fleet.round()
    [msg] = fleet.decide()
    assert "advance to step 3/3 (100%)" in msg and f"cohort {len(half) + 2}: {len(half) + 2} healthy" in msg

    fleet.round()
    assert fleet.answers(windowed) == "1.0"  # outside its window it never switches
    status = fleet.status(windowed)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")  # type: ignore[union-attr]
    assert status["phase"] == "Progressing" and ready["reason"] == "Waiting"
    assert ready["message"].startswith(f"Waiting: next window {opens.strftime('%Y-%m-%dT%H:%M')}")
    assert fleet.model(windowed)["desiredVersion"] == "2.0" and fleet.model(windowed)["state"] == "running"
    assert fleet.decide() == []  # the windowed device holds the last step
    fleet.device_file(windowed, {"portOffset": DEVICES.index(windowed)})
    fleet.commit(f"no more window for {windowed}")
    fleet.round()
    [msg] = fleet.decide()
    assert msg.startswith(f"rollout {name}: complete: group all pins counter 2.0") and "cohort 20: 20 healthy" in msg
    assert all(fleet.round().values()) and {fleet.answers(d) for d in DEVICES} == {"2.0"}
    log = git(fleet.server, "log", "--format=%an: %s", "main").splitlines()
    assert [line.split(":")[0] for line in log[:5]] == ["reconciler rollout", "Test Operator", "reconciler rollout",
                                                         "reconciler rollout", "Test Operator"]


def test_a_failing_version_aborts_at_the_first_step_and_every_cohort_device_returns(fleet: Fleet) -> None:
    fleet.start_rollout("counter-3", "2.0", "3.0", "[{devices: [d02, d03]}, {percent: 100}]",
                        "{maxFailed: 0, minReporting: 100}")
    ready = fleet.round()
    assert not ready["d02"] and not ready["d03"] and ready["d04"]
    assert fleet.model("d02")["state"] == "rolledBack" and fleet.answers("d02") == "2.0"
    [msg] = fleet.decide()
    assert msg.startswith("rollout counter-3: abort at step 1/2 (devices d02, d03): 2 failed > maxFailed 0")
    assert "every device runs 2.0 again (cohort 2: 0 healthy, 2 failed, 0 unknown)" in msg
    assert all(fleet.round().values())
    for d in ("d02", "d03"):
        m = fleet.model(d)
        assert m["version"] == "2.0" and m["state"] == "running" and "desiredVersion" not in m
    assert {fleet.answers(d) for d in DEVICES} == {"2.0"}


def test_the_golden_set_gate_rolls_back_a_version_that_answers_wrongly(fleet: Fleet) -> None:
    fleet.start_rollout("counter-4", "2.0", "4.0", "[{devices: [d05]}, {percent: 100}]",
                        "{maxFailed: 0, minReporting: 100}")
    assert not fleet.round()["d05"]
    m = fleet.model("d05")
    assert m["state"] == "rolledBack" and fleet.answers("d05") == "2.0"
    assert ('golden set golden.jsonl: case at line 1 failed: answer.label is "cat", expected "person"'
            in str(m["lastError"]))
    [msg] = fleet.decide()
    assert msg.startswith("rollout counter-4: abort at step 1/2")
    assert all(fleet.round().values())


def test_max_pulls_per_minute_spreads_the_pulls_by_device_hash(fleet: Fleet) -> None:
    name = "counter-5"
    fleet.start_rollout(name, "2.0", "5.0", "[{percent: 100}]", "{maxFailed: 0, minReporting: 100}",
                        ", maxPullsPerMinute: 5")
    # 20 devices at 5 a minute: four one-minute slots, by each device's hash
    first = {d for d in DEVICES if int(bucket(name, d) / 100 * 4) == 0}
    assert 0 < len(first) < len(DEVICES)
    fleet.round()
    assert {d for d in DEVICES if fleet.answers(d) == "5.0"} == first
    later = sorted(set(DEVICES) - first)
    ready = next(c for c in fleet.status(later[0])["conditions"] if c["type"] == "Ready")  # type: ignore[union-attr]
    assert ready["reason"] == "Waiting" and ready["message"].startswith("Waiting: pull of counter 5.0 at ")
    assert fleet.decide() == []  # the rest is unknown until its slot comes
