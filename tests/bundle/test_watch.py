"""offline.watch: the running agent applies a bundle that appears in the watched directory (a medium being
plugged in), writes its status file there, and does not apply the same bundle twice."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agentlab import Lab
from tests.bundle.conftest import create, offline_config

pytestmark = pytest.mark.integration


def wait_for(check: object, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if callable(check) and check():
            return True
        time.sleep(0.2)
    return False


def version(lab: Lab) -> object:
    code, body = lab.get("/healthz")
    return json.loads(body).get("version") if code == 200 else None


def test_agent_applies_bundles_that_appear_in_the_watched_directory(lab: Lab, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    staged = tmp_path / "staged"
    staged.mkdir()
    assert create(lab, staged / "b1.tar", "--device", "dev1") == 0
    lab.commit({"groups/all.yaml": lab.group_yaml("2.0")}, "pin 2.0")
    assert create(lab, staged / "b2.tar", "--device", "dev1") == 0
    config = offline_config(lab, offline={"watch": str(media)}, interval=2)
    log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - closed at the end of the test
    agent = subprocess.Popen([sys.executable, "-m", "reconciler", "agent", "--config", str(config)],
                             stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # nothing applied yet: the device has no commit and cannot fetch one
        time.sleep(1)
        assert version(lab) is None
        shutil.copy(staged / "b1.tar", media / ".b1.tar.part")
        os.replace(media / ".b1.tar.part", media / "b1.tar")  # a copy tool's rename: the file appears whole
        assert wait_for(lambda: version(lab) == "1.0"), (tmp_path / "agent.log").read_text()[-3000:]
        assert wait_for(lambda: (media / "status-dev1.tar").exists())
        shutil.copy(staged / "b2.tar", media / "b2.tar")
        assert wait_for(lambda: version(lab) == "2.0"), (tmp_path / "agent.log").read_text()[-3000:]
        time.sleep(3)  # a few more passes: neither bundle is applied again
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) is not None
        log.close()
    text = (tmp_path / "agent.log").read_text()
    assert text.count("bundle ") >= 2 and "b1.tar applied" in text and "b2.tar applied" in text
    assert text.count("b1.tar applied") == 1 and text.count("b2.tar applied") == 1
    applied = json.loads((lab.data_dir / "bundles/applied.json").read_text())
    assert applied["file"] == "b2.tar"
