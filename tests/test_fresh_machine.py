"""``make test`` on a machine that lacks the Debian packages: the install script names the one command to run
(as non-root), and the integration tests are skipped with that reason while the unit tests still run.

The machine's package database is the one thing imitated: a ``dpkg-query`` first on PATH that reports every
package as not installed, so the real script and the real pytest take the path a fresh machine takes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleetutil import ROOT


@pytest.fixture
def fresh_path() -> Iterator[str]:
    shim = Path(tempfile.mkdtemp(prefix="rc-fresh-", dir="/tmp"))  # readable by another user, unlike tmp_path
    shim.chmod(0o755)
    query = shim / "dpkg-query"
    query.write_text("#!/bin/sh\necho 'dpkg-query: no packages found' >&2\nexit 1\n")
    query.chmod(0o755)
    try:
        yield f"{shim}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    finally:
        shutil.rmtree(shim)


def test_non_root_gets_one_line_naming_the_command(fresh_path: str) -> None:
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        pytest.skip("needs root to run the script as another user")
    script = ROOT / "scripts/install-system-deps.sh"
    out = subprocess.run(["runuser", "-u", "nobody", "--", "env", f"PATH={fresh_path}", "bash", str(script)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("missing Debian packages (docker.io docker-registry gitolite3")
    assert "run 'sudo bash scripts/install-system-deps.sh'" in lines[0]


def test_pytest_skips_integration_tests_with_the_reason_and_runs_unit_tests(fresh_path: str) -> None:
    # the outer run's PYTEST_ADDOPTS (a --basetemp, say) would make the inner run clean up the outer one's dirs
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"} | {"PATH": fresh_path}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
         "tests/test_quantities.py", "tests/artifacts/test_oras_interop.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SKIPPED [1]" in out.stdout
    assert "missing Debian packages (docker.io docker-registry" in out.stdout
    assert "run 'sudo bash scripts/install-system-deps.sh'" in out.stdout
    summary = out.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "1 skipped" in summary, summary
