"""repo.mirrors: read-only git mirrors tried in order before the origin; down, lagging or lying ones are noted
in status and passed over, and status is pushed to the origin only."""

from __future__ import annotations

import subprocess

import pytest

from tests.agentlab import Lab
from tests.fleetutil import git
from tests.scalelab import artifacts, lab, reconciler

__all__ = ["artifacts", "lab"]  # fixtures
pytestmark = pytest.mark.integration


def test_mirrors_serve_first_and_fail_over_to_the_origin(lab: Lab) -> None:
    mirror = lab.root / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--mirror", str(lab.server), str(mirror)], check=True)
    gone = lab.root / "no-such-mirror.git"
    agent = reconciler(lab, repo={"url": str(lab.server), "mirrors": [str(gone), f"file://{mirror}"]})
    cycle = agent.run_once()
    assert cycle.ready and cycle.polled is not None
    status = lab.status()
    assert status["fetch"]["source"] == f"file://{mirror}"
    assert [n.split(":")[0] for n in status["fetch"]["notes"]] == [f"mirror {gone}"]
    assert git(mirror, "for-each-ref", "refs/heads/status/") == ""  # status goes to the origin only

    # a lagging mirror serves what it has; the device takes the new commit once the mirror has it
    tip = lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "to 2.0")
    assert agent.run_once().ready and lab.status()["models"][0]["version"] == "1.0"
    git(mirror, "fetch", "-q", "origin", "+refs/heads/main:refs/heads/main")
    assert agent.run_once().ready and lab.status()["appliedCommit"] == tip
    assert lab.status()["models"][0]["version"] == "2.0"

    # a mirror that offers other history (rewound or forged) is passed over for the origin
    orphan = git(lab.work, "commit-tree", "-m", "forged", f"{tip}^{{tree}}")
    git(lab.work, "push", "-q", "--force", str(mirror), f"{orphan}:refs/heads/main")
    cycle = agent.run_once()
    assert cycle.ready and cycle.polled is not None and cycle.polled.source == str(lab.server)
    assert "does not contain" in cycle.polled.notes[-1] and str(cycle.tip) == tip
    # a mirror behind what the device has is passed over too
    git(lab.work, "push", "-q", "--force", str(mirror), f"{tip}~1:refs/heads/main")
    cycle = agent.run_once()
    assert cycle.polled is not None and "behind" in cycle.polled.notes[-1] and cycle.blocked is None


def test_all_sources_down_is_offline_and_the_device_keeps_running(lab: Lab) -> None:
    agent = reconciler(lab, repo={"url": str(lab.server), "mirrors": [str(lab.root / "gone.git")]})
    assert agent.run_once().ready
    lab.server.rename(lab.root / "moved.git")
    cycle = agent.run_once()
    assert cycle.fetch_error is not None and lab.get("/healthz")[0] == 200
