"""The change beacon end to end: hooks/post-receive writes it into a real web server's root (busybox httpd on
loopback), the agent reads it with conditional GETs and fetches git only when it moved, and every
fullFetchEvery cycles whatever it says."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.beacon.client import BeaconClient
from reconciler.main import main
from tests.agentlab import Lab
from tests.fleetutil import ROOT, git
from tests.scalelab import artifacts, lab, reconciler
from tests.services.webserver import WebServer

__all__ = ["artifacts", "lab"]  # fixtures
pytestmark = pytest.mark.integration


def install_hook(lab: Lab, beacon: Path) -> None:
    shutil.copy(ROOT / "hooks/post-receive", lab.server / "hooks/post-receive")
    git(lab.server, "config", "reconciler.beacon", str(beacon))
    git(lab.server, "config", "reconciler.command", str(Path(sys.executable).parent / "reconciler"))


def test_the_agent_fetches_git_only_when_the_beacon_moved(lab: Lab, web_server: WebServer) -> None:
    beacon = web_server.root / "fleet.beacon"
    install_hook(lab, beacon)
    first = lab.commit({"devices/dev2.yaml": "apiVersion: fleet/v1\nkind: Device\nmetadata: {name: dev2}\n"
                                             "spec: {}\n# touched\n"}, "touch dev2")
    assert beacon.read_text() == f"{first}\trefs/heads/main\n"  # written by the hook on push

    agent = reconciler(lab, repo={"url": str(lab.server),
                                  "beacon": {"url": web_server.url("fleet.beacon"), "fullFetchEvery": 4}})
    cycle = agent.run_once()
    assert cycle.ready and agent.poller.fetches == 1  # a new process starts with a real fetch
    for _ in range(3):
        cycle = agent.run_once()
        assert cycle.ready and cycle.polled is not None and cycle.polled.source == "beacon"
    assert agent.poller.fetches == 1
    assert agent.run_once().ready and agent.poller.fetches == 2  # one cycle in 4 fetches, whatever the beacon says

    tip = lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "to 2.0")
    assert beacon.read_text() == f"{tip}\trefs/heads/main\n"
    cycle = agent.run_once()  # the beacon moved: fetch at once, not at the next full fetch
    assert cycle.ready and agent.poller.fetches == 3 and str(cycle.tip) == tip
    assert lab.status()["appliedCommit"] == tip and lab.status()["models"][0]["version"] == "2.0"


def test_a_broken_or_lying_beacon_cannot_freeze_or_flood_a_device(lab: Lab, web_server: WebServer) -> None:
    beacon = web_server.root / "fleet.beacon"
    assert main(["beacon", "write", "--repo", str(lab.server), "--to", str(beacon)]) == 0
    agent = reconciler(lab, repo={"url": str(lab.server),
                                  "beacon": {"url": web_server.url("fleet.beacon"), "fullFetchEvery": 100}})
    assert agent.run_once().ready and agent.poller.fetches == 1

    # the beacon names a commit git does not have: one fetch, then no more for the same lie
    beacon.write_text("c" * 40 + "\trefs/heads/main\n")
    assert agent.run_once().ready and agent.poller.fetches == 2
    assert agent.run_once().ready and agent.poller.fetches == 2

    # garbage, then a dead server: the agent fetches git every cycle and says why in its status
    beacon.write_text("<html>oops</html>")
    cycle = agent.run_once()
    assert cycle.ready and agent.poller.fetches == 3 and cycle.polled is not None
    assert "line 1" in cycle.polled.notes[0]
    web_server.stop()
    tip = lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "to 2.0")
    cycle = agent.run_once()
    assert cycle.ready and str(cycle.tip) == tip and agent.poller.fetches == 4
    assert "unreachable" in lab.status()["fetch"]["notes"][0]
    assert lab.status()["fetch"]["source"] == str(lab.server)


def test_conditional_get_and_the_hooks_mtime_bump(lab: Lab, web_server: WebServer) -> None:
    beacon = web_server.root / "b"
    assert main(["beacon", "write", "--repo", str(lab.server), "--to", str(beacon)]) == 0
    client = BeaconClient(web_server.url("b"))
    main_tip = git(lab.server, "rev-parse", "main")
    assert client.read("refs/heads/main").tip == main_tip
    again = client.read("refs/heads/main")
    assert again.tip == main_tip and again.changed is False  # 304 Not Modified
    # a second push in the same second: same size, and nginx/busybox ETags are mtime (s) + size
    other = git(lab.work, "commit-tree", "-p", "main", "-m", "x", f"{main_tip}^{{tree}}")
    git(lab.work, "push", "-q", "origin", f"{other}:refs/heads/main")
    assert main(["beacon", "write", "--repo", str(lab.server), "--to", str(beacon)]) == 0
    reading = client.read("refs/heads/main")
    assert reading.changed and reading.tip == other
    assert client.read("refs/heads/other") == type(reading)(None, False)
    assert subprocess.run(["curl", "-sf", web_server.url("b")], capture_output=True, text=True).stdout \
        == f"{other}\trefs/heads/main\n"
