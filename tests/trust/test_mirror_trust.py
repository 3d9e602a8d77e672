"""A git mirror is untrusted: an unsigned commit it serves is refused like one from the origin, and that mirror's
history is passed over from then on, so it cannot hold the device back from the origin's signed commits."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.agentlab import stop_workloads
from tests.trust.fleetlab import FleetLab, group_yaml
from tests.trust.signing import Key, run_git


def test_an_unsigned_commit_from_a_mirror_is_refused_and_the_origin_then_serves(tmp_path: Path,
                                                                               keys: dict[str, Key]) -> None:
    server, mirror = tmp_path / "server.git", tmp_path / "mirror.git"
    run_git(tmp_path, "init", "-q", "--bare", "-b", "main", str(server))
    lab = FleetLab(tmp_path, str(server), extra={"repo": {"url": str(server), "mirrors": [str(mirror)]}})
    lab.trust([keys["alice"].line(), keys["bob"].line()])
    with stop_workloads(lab.data_dir):
        good = lab.init(keys["alice"])
        subprocess.run(["git", "clone", "-q", "--mirror", str(server), str(mirror)], check=True)
        assert lab.run() == 0 and lab.status()["fetch"]["source"] == str(mirror)

        forged = lab.commit({"groups/all.yaml": group_yaml("2.0")}, "forged on the mirror", None, push=False)
        run_git(lab.work, "push", "-q", str(mirror), "main")
        assert lab.run() == 1  # refused: unsigned
        assert lab.condition("Verified")["reason"] == "Unsigned" and lab.running() == "1.0"
        assert lab.status()["appliedCommit"] == good

        # the operator's signed change reaches the origin only; the device gets it despite the mirror
        run_git(lab.work, "reset", "-q", "--hard", good)
        signed = lab.commit({"groups/all.yaml": group_yaml("3.0")}, "signed upgrade", keys["bob"], push=False)
        run_git(lab.work, "push", "-q", str(server), "main")
        assert lab.run() == 0 and lab.running() == "3.0"
        status = lab.status()
        assert status["appliedCommit"] == signed and status["fetch"]["source"] == str(server)
        assert any(forged[:12] in note for note in status["fetch"]["notes"]), yaml.safe_dump(status["fetch"])
