"""Trust over the real git server (gitolite behind sshd): whoever holds a push key is not trusted for that."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.agentlab import stop_workloads
from tests.services.gitserver import GitServer
from tests.trust.fleetlab import FleetLab, group_yaml
from tests.trust.signing import Key, run_git

pytestmark = pytest.mark.integration


def test_signed_commits_over_ssh_and_a_stolen_push_key_changes_nothing(
        git_server: GitServer, tmp_path: Path, keys: dict[str, Key]) -> None:
    lab = FleetLab(tmp_path, git_server.url(), push_env={"GIT_SSH_COMMAND": git_server.ssh_command("admin")},
                   extra={"repo": {"url": git_server.url(), "sshKey": str(git_server.key("dev1")),
                                   "knownHosts": str(git_server.known_hosts)}, "timeouts": {"git": 10}})
    lab.trust([keys["alice"].line(), keys["bot"].line()])
    with stop_workloads(lab.data_dir):
        lab.init(keys["alice"])
        assert lab.run() == 0 and lab.running() == "1.0"
        # the server accepts whatever the admin key pushes; the device does not
        bad = lab.commit({"groups/all.yaml": group_yaml("2.0")}, "pushed with a stolen key", keys["mallory"])
        assert lab.run() == 1 and lab.running() == "1.0"
        verified = lab.condition("Verified")
        assert verified["reason"] == "UnknownKey" and bad[:12] in verified["message"]
        # the status still reaches the server: the device's own ref, its own key
        assert git_server.git("admin", "ls-remote", git_server.url(), "refs/heads/status/dev1").stdout
        lab.commit({"groups/all.yaml": group_yaml("2.0")}, "signed upgrade", keys["alice"])
        assert lab.run() == 1  # the stolen-key commit is still in the range
        run_git(lab.work, "reset", "-q", "--hard", "HEAD~2")
        lab.commit({"groups/all.yaml": group_yaml("2.0")}, "signed upgrade, history replaced", keys["alice"],
                   force=True)
        assert lab.run() == 0 and lab.running() == "2.0"
