"""packaging/reconciler-agent.service as systemd itself reads it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleetutil import ROOT

UNIT = ROOT / "packaging/reconciler-agent.service"
INSTALLED = "/usr/local/bin/reconciler"


def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze missing: run scripts/install-system-deps.sh (Debian package systemd)")
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED} agent " in text
    # verify checks that ExecStart's program exists: point it at this checkout's console script
    script = Path(sys.executable).parent / "reconciler"
    unit = tmp_path / "reconciler-agent.service"
    unit.write_text(text.replace(INSTALLED, str(script)))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    own = [line for line in res.stderr.splitlines() if "reconciler-agent" in line]
    assert own == [], own  # unknown keys and bad values are warnings with exit 0: none allowed


def test_unit_declares_what_the_agent_relies_on() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["KillMode"] == "process"  # process-runtime workloads outlive an agent restart
    assert service["StateDirectory"] == "reconciler"
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "full"
    assert "--config /etc/reconciler/agent.yaml" in service["ExecStart"]
