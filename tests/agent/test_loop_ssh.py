"""The agent against a real git server: gitolite behind sshd on loopback, per-device keys and ref rules.

The fleet lives on the server; operators commit to it as ``admin``; every agent clones it over ssh with its
device key and pushes ``status/<device>``, the only ref gitolite lets it write.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2
import pytest
import yaml

from reconciler.errors import PushRejected
from reconciler.git.mirror import FleetMirror, GitAuth
from reconciler.main import main
from tests.agentlab import Lab, publish, stop_workloads
from tests.services.gitserver import GIT_USER, GitServer
from tests.services.registry import run_registry

pytestmark = pytest.mark.integration

DEVICE_YAML = "apiVersion: fleet/v1\nkind: Device\nmetadata: {{name: {0}}}\nspec: {{}}\n"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    work = tmp_path_factory.mktemp("registry")
    with run_registry(work) as reg:
        refs = {v: publish(reg.address, work, "models/counter", v, f"weights {v}".encode() * 1000)
                for v in ("1.0", "2.0")}
        yield reg.address, refs


@dataclass
class Site:
    """The fleet on the gitolite server, and agents configured to reach it over ssh."""

    server: GitServer
    lab: Lab  # the fleet's YAML, the model's port, the per-device data dirs

    @property
    def root(self) -> Path:
        return self.lab.root

    def commit(self, files: dict[str, str | None], message: str) -> str:
        return self.server.commit_files(self.root / "admin", files, message)

    def config_path(self, device: str, key_of: str | None = None) -> Path:
        """An agent configuration for ``device`` holding the ssh key of ``key_of`` (default: its own)."""
        path = self.root / f"agent-{device}.yaml"
        doc = {"device": device,
               "repo": {"url": self.server.url(), "sshKey": str(self.server.key(key_of or device)),
                        "knownHosts": str(self.server.known_hosts)},
               "dataDir": str(self.data_dir(device)), "interval": 1, "jitter": 0,
               "timeouts": {"git": 10},
               "runtimeOptions": {"restartBackoff": 0.2, "stopGrace": 2}}
        path.write_text(yaml.safe_dump(doc))
        return path

    def data_dir(self, device: str) -> Path:
        return self.root / f"data-{device}"

    def run(self, device: str = "dev1", key_of: str | None = None) -> int:
        return main(["agent", "--config", str(self.config_path(device, key_of)), "--once"])

    def state(self, device: str = "dev1") -> dict[str, object]:
        doc = json.loads((self.data_dir(device) / "state.json").read_text())
        assert isinstance(doc, dict)
        return doc

    # -- what the server holds, read as the admin over ssh ------------------------------------------------
    def server_view(self) -> Path:
        view = self.root / "admin-view.git"
        if not view.exists():
            pygit2.init_repository(str(view), bare=True)
        self.server.git("admin", "--git-dir", str(view), "fetch", "-q", "--prune", self.server.url(),
                        "+refs/heads/*:refs/heads/*")
        return view

    def server_git(self, *args: str) -> str:
        view = self.server_view()
        return self.server.git("admin", "--git-dir", str(view), *args).stdout.strip()

    def server_refs(self) -> dict[str, str]:
        out = self.server.git("admin", "ls-remote", self.server.url()).stdout
        return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}

    def server_status_chain(self, device: str = "dev1") -> list[dict[str, object]]:
        """Every status.yaml on ``status/<device>`` at the server, oldest first."""
        view = self.server_view()
        shas = self.server.git("admin", "--git-dir", str(view), "rev-list", "--reverse",
                               f"refs/heads/status/{device}").stdout.split()
        docs = []
        for sha in shas:
            text = self.server.git("admin", "--git-dir", str(view), "show", f"{sha}:status.yaml").stdout
            docs.append(yaml.safe_load(text))
        return docs


def fleet_files(lab: Lab, heartbeat: str = "1h") -> dict[str, str | None]:
    return {
        "fleet.yaml": textwrap.dedent(f"""\
            apiVersion: fleet/v1
            kind: Fleet
            metadata: {{name: ssh-lab}}
            spec:
              defaults: {{runtime: process}}
              status: {{heartbeatInterval: {heartbeat}}}
            """),
        "models/counter.yaml": lab.model_yaml({v: {} for v in lab.refs}),
        "groups/all.yaml": lab.group_yaml("1.0", [{"detector_id": "det_a00000000000000000000000000", "model": "counter"}]),
        "devices/dev1.yaml": DEVICE_YAML.format("dev1"),
        "devices/dev2.yaml": DEVICE_YAML.format("dev2"),
    }


@pytest.fixture
def site(git_server: GitServer, artifacts: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[Site]:
    address, refs = artifacts
    site = Site(git_server, Lab(tmp_path, address, refs))
    # the server outlives a test (module scope): start every test from no status branches
    for ref in site.server_refs():
        if ref.startswith("refs/heads/status/"):
            git_server.git("admin", "push", "-q", git_server.url(), f":{ref}")
    site.commit(fleet_files(site.lab), "fleet for this test")
    with stop_workloads(site.data_dir("dev1"), site.data_dir("dev2")):
        yield site


def connected(doc: dict[str, object]) -> str:
    conditions = doc["conditions"]
    assert isinstance(conditions, list)
    return str(next(c for c in conditions if c["type"] == "Connected")["status"])


def test_agent_clones_over_ssh_applies_and_pushes_its_status(site: Site) -> None:
    assert site.run("dev1") == 0
    assert site.lab.get("/healthz")[0] == 200
    main_sha = site.server_refs()["refs/heads/main"]
    chain = site.server_status_chain("dev1")
    assert len(chain) == 1
    status = chain[0]
    assert status["device"] == "dev1" and status["phase"] == "Ready"
    assert status["appliedCommit"] == status["observedCommit"] == main_sha
    assert status["push"] == {"pending": 0, "lastError": None}
    assert site.server_git("log", "-1", "--format=%an", "refs/heads/status/dev1") == "dev1"
    mirror = pygit2.Repository(str(site.data_dir("dev1") / "fleet.git"))
    assert mirror.remotes["origin"].url == site.server.url()
    assert site.state("dev1")["pushError"] is None

    # a commit that concerns dev1 arrives over ssh and is applied; its status follows on the server
    new_main = site.commit({"groups/all.yaml": site.lab.group_yaml("2.0")}, "upgrade")
    assert site.run("dev1") == 0
    assert json.loads(site.lab.get("/healthz")[1])["version"] == "2.0"
    chain = site.server_status_chain("dev1")
    assert len(chain) == 2 and chain[-1]["appliedCommit"] == new_main
    models = chain[-1]["models"]
    assert isinstance(models, list) and models[0]["version"] == "2.0"


def test_status_push_refused_is_recorded_never_success(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    # a heartbeat every second, so that the next cycle writes a status document even though nothing changed
    site.commit(fleet_files(site.lab, heartbeat="1s"), "heartbeat every second")
    caplog.set_level(logging.INFO, logger="reconciler")
    # configured as dev2 but holding dev1's key: gitolite lets dev1 write status/dev1 only
    code = site.run("dev2", key_of="dev1")
    assert code == 1  # the workloads are fine, but a refused report is never taken for success
    assert site.lab.get("/healthz")[0] == 200
    assert "refs/heads/status/dev2" not in site.server_refs()
    error = site.state("dev2")["pushError"]
    assert isinstance(error, str)
    assert "refused" in error and "refs/heads/status/dev2" in error and "DENIED" in error
    refusals = [r for r in caplog.records if r.levelno >= logging.ERROR and "status push refused" in r.message]
    assert len(refusals) == 1 and "status/dev2" in refusals[0].message
    assert not [r for r in caplog.records if "pushed" in r.message and "status/dev2" in r.message]

    time.sleep(1.1)
    caplog.clear()
    assert site.run("dev2", key_of="dev1") == 1
    assert "refs/heads/status/dev2" not in site.server_refs()
    assert any("status push refused" in r.message for r in caplog.records)
    # the queue is the local branch: the next status document carries the refusal
    local = pygit2.Repository(str(site.data_dir("dev2") / "fleet.git"))
    tip = local.references["refs/heads/status/dev2"].peel(pygit2.Commit)
    blob = tip.tree["status.yaml"]
    assert isinstance(blob, pygit2.Blob)
    doc = yaml.safe_load(blob.data)
    assert doc["device"] == "dev2"
    assert doc["push"]["pending"] >= 1 and "DENIED" in doc["push"]["lastError"]
    reported = next(c for c in doc["conditions"] if c["type"] == "StatusReported")
    assert reported["status"] == "False" and reported["reason"] == "PushRejected" and "DENIED" in reported["message"]
    assert len(list(local.walk(tip.id))) == 2  # both cycles' documents wait in order


def test_device_key_cannot_write_main_or_another_devices_status(site: Site) -> None:
    assert site.run("dev1") == 0
    before = site.server_refs()
    auth = GitAuth(ssh_key=site.server.key("dev1"), known_hosts=site.server.known_hosts, username=GIT_USER)
    mirror = FleetMirror(site.data_dir("dev1") / "fleet.git", site.server.url(), auth=auth, timeout=10)
    tip = mirror.fetch()
    me = pygit2.Signature("dev1", "dev1@devices.fleet.invalid")
    parent = mirror.repo[tip].peel(pygit2.Commit)
    forged = mirror.repo.create_commit("refs/heads/forged", me, me, "pin what I like", parent.tree_id, [tip])
    with pytest.raises(PushRejected, match=r"refs/heads/main.*DENIED"):
        mirror.push_ref("refs/heads/forged", "refs/heads/main")
    with pytest.raises(PushRejected, match=r"refs/heads/status/dev2.*DENIED"):
        mirror.push_ref("refs/heads/forged", "refs/heads/status/dev2")
    after = site.server_refs()
    assert after == before and str(forged) not in after.values()


def test_offline_cycle_completes_and_queued_status_is_pushed_in_order(site: Site) -> None:
    assert site.run("dev1") == 0
    online_tip = site.server_refs()["refs/heads/status/dev1"]
    site.server.stop()
    try:
        assert site.run("dev1") == 0  # offline, the workloads are fine: still Ready
        assert site.lab.get("/healthz")[0] == 200
        # something to report while offline: the workload and its supervisor die
        state = json.loads(next((site.data_dir("dev1") / "process").iterdir()).joinpath("state.json").read_text())
        os.kill(int(state["supervisorPid"]), signal.SIGKILL)
        os.kill(int(state["childPid"]), signal.SIGKILL)
        time.sleep(0.3)
        assert site.run("dev1") == 0
        assert site.lab.get("/healthz")[0] == 200
        pending = site.state("dev1")["pushError"]
        assert isinstance(pending, str) and pending.startswith("offline, 2 queued")
    finally:
        site.server.start()
    assert site.server_refs()["refs/heads/status/dev1"] == online_tip  # nothing reached it while offline
    assert site.run("dev1") == 0
    chain = site.server_status_chain("dev1")
    assert [connected(d) for d in chain] == ["True", "False", "False", "True"]
    assert [bool(d["drift"]) for d in chain] == [False, False, True, False]
    local = pygit2.Repository(str(site.data_dir("dev1") / "fleet.git"))
    assert site.server_refs()["refs/heads/status/dev1"] == str(local.references["refs/heads/status/dev1"].target)
    assert site.state("dev1")["pushError"] is None
