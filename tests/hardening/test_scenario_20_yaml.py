"""Scenario 20 (malicious YAML): bombs, huge files, floods of problems and symlinks are located errors, found in
bounded time and memory, and nothing outside the repository is ever read or echoed."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

from tests.fleetutil import ROOT, git, minimal_fleet, write

MEMORY_CAP = 512 * 1024**2  # the unbounded loader needed 5 GiB for the 639-byte bomb


def bomb(levels: int = 9, width: int = 9) -> str:
    lines = ["apiVersion: fleet/v1", "kind: Group", "metadata: {name: g}", "x0: &a0 [lol]"]
    for i in range(1, levels + 1):
        lines.append(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(f"spec: {{models: [], members: *a{levels}}}")
    return "\n".join(lines) + "\n"


def validate_bounded(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`reconciler validate` in a child limited to MEMORY_CAP of address space."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run([sys.executable, "-m", "reconciler", "validate", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit, cwd=ROOT)


def test_scenario_20_alias_bomb_is_a_located_error_in_bounded_time_and_memory(tmp_path: Path) -> None:
    fleet = minimal_fleet(tmp_path / "fleet")
    text = bomb()
    assert len(text) < 700
    write(fleet, "groups/bomb.yaml", text)
    out = validate_bounded(str(fleet))
    assert out.returncode == 1, out.stderr
    assert "internal error" not in out.stderr
    assert "groups/bomb.yaml:" in out.stdout and "aliases expand this document past" in out.stdout


def test_scenario_20_agent_refuses_the_bomb_too(tmp_path: Path) -> None:
    from reconciler.fleet.document import parse

    doc, problems = parse("groups/bomb.yaml", bomb())
    assert doc is None and len(problems) == 1 and "aliases expand" in problems[0].message
    assert problems[0].line > 1


def test_scenario_20_recursive_alias_and_deep_nesting_are_located(tmp_path: Path) -> None:
    from reconciler.fleet.document import parse

    doc, problems = parse("g.yaml", "a: &x [1, *x]\n")
    assert doc is None and "recursive" in problems[0].message and problems[0].line == 1
    doc, problems = parse("g.yaml", "a: " + "[" * 300 + "]" * 300 + "\n")
    assert doc is None and "nested deeper than 200 levels" in problems[0].message
    doc, problems = parse("g.yaml", "{[1, 2]: x, ok: 1}\n")
    assert doc is not None and doc.data == {"ok": 1} and "plain scalar" in problems[0].message


def test_scenario_20_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    fleet = minimal_fleet(tmp_path / "fleet")
    big = "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: big}\nspec:\n  members:\n"
    big += "".join(f"  - dev{i}\n" for i in range(100_000))  # 1.3 MB, 100,000 unknown members
    write(fleet, "groups/big.yaml", big)
    out = validate_bounded(str(fleet))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert len(lines) < 10
    assert any(line.startswith("groups/big.yaml:1:1: error: the file has") and "over the cap of 1048576" in line
               for line in lines)
    # the cap is the operator's to set; past it, problems are capped per file
    small = "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: big}\nspec:\n  members:\n"
    write(fleet, "groups/big.yaml", small + "".join(f"  - dev{i}\n" for i in range(100_000))[:30_000])
    out = validate_bounded(str(fleet), "--max-file-size", "20k")
    assert "over the cap of 20480" in out.stdout
    write(fleet, "groups/big.yaml", small + "".join(f"  - dev{i}\n" for i in range(2_000)))
    out = validate_bounded(str(fleet), "--max-file-size", "2Mi")
    assert "over the cap" not in out.stdout
    assert "groups/big.yaml: error: ... and 1950 more problems in this file" in out.stdout
    assert len(out.stdout.splitlines()) < 80
    assert validate_bounded(str(fleet), "--max-file-size", "lots").returncode == 2


def test_scenario_20_problems_per_file_are_capped() -> None:
    from reconciler.fleet.document import Limits, capped, parse

    text = "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: g}\n" + "".join(f"k: {i}\n" for i in range(500))
    _, problems = parse("g.yaml", text, Limits())
    assert len(problems) == 499  # the parser reports all, the view and validate cap them
    shown = capped(problems)
    assert len(shown) == 51 and shown[-1].format() == "g.yaml: error: ... and 449 more problems in this file"


def test_scenario_20_symlink_out_of_the_repo_is_named_and_not_echoed(tmp_path: Path) -> None:
    secret = tmp_path / "outside.yaml"
    secret.write_text("apiVersion: fleet/v1\nkind: Group\nmetadata: {name: TOPSECRET}\nspec: {}\n")
    fleet = minimal_fleet(tmp_path / "fleet")
    os.symlink(secret, fleet / "groups" / "leak.yaml")
    os.symlink(tmp_path / "missing.yaml", fleet / "groups" / "dangling.yaml")
    (tmp_path / "elsewhere").mkdir()
    write(tmp_path / "elsewhere", "x.yaml", secret.read_text())
    os.symlink(tmp_path / "elsewhere", fleet / "models" / "linked")
    os.symlink(tmp_path / "elsewhere", fleet / "devices2")
    out = validate_bounded(str(fleet))
    assert out.returncode == 1
    assert "TOPSECRET" not in out.stdout + out.stderr
    assert "groups/leak.yaml: error: groups/leak.yaml: a symbolic link" in out.stdout
    assert "groups/dangling.yaml: error: groups/dangling.yaml: a symbolic link" in out.stdout


def test_scenario_20_symlinked_directory_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside, "evil.yaml", "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: evil}\nspec: {models: []}\n")
    fleet = minimal_fleet(tmp_path / "fleet")
    for f in (fleet / "groups").iterdir():
        f.unlink()
    (fleet / "groups").rmdir()
    os.symlink(outside, fleet / "groups")
    out = validate_bounded(str(fleet))
    assert out.returncode == 1
    assert "groups: a symbolic link" in out.stdout and "evil" not in out.stdout.replace("evil.yaml", "")


def test_scenario_20_symlink_committed_to_git_is_refused(tmp_path: Path) -> None:
    fleet = minimal_fleet(tmp_path / "fleet")
    os.symlink("/etc/passwd", fleet / "groups" / "passwd.yaml")
    git(fleet, "init", "-q", "-b", "main")
    git(fleet, "add", "-A")
    git(fleet, "commit", "-qm", "a link")
    out = validate_bounded(str(fleet), "--rev", "main")
    assert out.returncode == 1
    assert "groups/passwd.yaml: error: groups/passwd.yaml: a symbolic link" in out.stdout
    assert "root:" not in out.stdout
