"""Helpers that build small fleet repositories on disk and in git for tests."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "fleet-config"
D = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


def copy_example(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest)
    return dest


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def fleet_and_model(root: Path) -> Path:
    """fleet.yaml (registry ``repo``, process runtime) and model ``m`` with versions 1.0 and 2.0."""
    write(root, "fleet.yaml", """
        apiVersion: fleet/v1
        kind: Fleet
        metadata: {name: test}
        spec:
          registries:
            repo: {host: 127.0.0.1, port: 5000}
          defaults: {runtime: process, registry: repo}
        """)
    write(root, "models/m.yaml", f"""
        apiVersion: fleet/v1
        kind: Model
        metadata: {{name: m}}
        spec:
          versions:
            "1.0": {{artifact: repo/m@{D}, command: [sleep, "100"]}}
            "2.0": {{artifact: repo/m@{D2}, command: [sleep, "100"]}}
        """)
    return root


def minimal_fleet(root: Path) -> Path:
    fleet_and_model(root)
    write(root, "groups/g.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: g}
        spec:
          members: [d1]
          models: [{name: m, version: "1.0"}]
        """)
    for d in ("d1", "d2"):
        write(root, f"devices/{d}.yaml", f"""
            apiVersion: fleet/v1
            kind: Device
            metadata: {{name: {d}, labels: {{site: s1}}}}
            spec: {{}}
            """)
    return root


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def git_init(root: Path) -> Path:
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial fleet")
    return root


def commit_all(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")
