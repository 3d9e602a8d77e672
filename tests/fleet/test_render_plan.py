"""render, loading from git objects versus a directory, plan between revisions, and the git hooks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pygit2
import pytest
import yaml

from reconciler.fleet.source import DirSource, GitSource
from reconciler.fleet.validate import validate
from reconciler.fleet.view import FleetView
from reconciler.main import main
from tests.fleetutil import ROOT, commit_all, copy_example, git, git_init, minimal_fleet, write

DEVICES = ["cam-north-01", "cam-north-02", "cam-south-01", "gateway-01", "lab-01"]


def test_render_is_deterministic_with_layering_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(ROOT / "fleet-config"), "--device", "cam-north-01"]) == 0
    first = capsys.readouterr().out
    assert main(["render", str(ROOT / "fleet-config"), "--device", "cam-north-01"]) == 0
    assert capsys.readouterr().out == first
    doc = yaml.safe_load(first)
    assert doc["groups"] == ["all", "north-stores", "pilot"]
    models = {m["name"]: m for m in doc["models"]}
    # pilot (priority 20) pins 1.0.0 over north-stores (priority 10) 1.1.0: a downgrade is just a pin
    assert models["people-counter"]["version"] == "1.0.0" and models["people-counter"]["group"] == "pilot"
    assert models["people-counter"]["artifact"].startswith("registry.acme.example:5000/models/people-counter@sha256:")
    dets = {d["detector_id"]: d for d in doc["detectors"]}
    assert dets["det_2C3J27XDCG2LmlZGEONYlgCtjfI"]["always_return_edge_prediction"] is False
    assert dets["det_2C3J27XDCG2LmlZGEONYlgCtjfI"]["disable_cloud_escalation"] is False
    assert dets["det_2C3J27XDCG2LmlZGEONYlgCtjfI"]["min_time_between_escalations"] == 2.0
    assert dets["det_2WoGsbeKXgzg2sye9b2Rann76dE"]["min_time_between_escalations"] == 5.0
    # fleet filesystem storage < pilot s3 storage; inference log from north-stores
    assert doc["config"]["storage"]["driver"] == "s3" and "filesystem" not in doc["config"]["storage"]
    assert doc["config"]["inferenceLog"] == {"localInferenceStorage": "100Mi", "pageSize": 1000}


def test_render_unknown_device_is_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", str(ROOT / "fleet-config"), "--device", "ghost"]) == 1
    err = capsys.readouterr().err
    assert "unknown device 'ghost'" in err and "Traceback" not in err


def test_render_of_device_in_invalid_fleet_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = minimal_fleet(tmp_path / "f")
    (root / "groups/g.yaml").write_text((root / "groups/g.yaml").read_text().replace('"1.0"', '"3.0"'))
    assert main(["render", str(root), "--device", "d1"]) == 1
    assert "groups/g.yaml:6:" in capsys.readouterr().err


def test_git_revision_and_directory_load_identically(tmp_path: Path) -> None:
    root = git_init(copy_example(tmp_path / "fleet"))
    repo = pygit2.Repository(str(root))
    from reconciler.fleet.resolve import render_device

    for device in DEVICES:
        a = render_device(FleetView(DirSource(root)), device).to_dict()
        b = render_device(FleetView(GitSource(repo, "HEAD")), device).to_dict()
        assert a == b
    # an old revision is read from git objects, whatever the work tree holds now
    (root / "groups/pilot.yaml").unlink()
    commit_all(root, "drop pilot")
    from reconciler.fleet.resolve import render_device as rd

    old = rd(FleetView(GitSource(repo, "HEAD~1")), "lab-01").to_dict()
    new = rd(FleetView(DirSource(root)), "lab-01").to_dict()
    assert "pilot" in old["groups"] and "pilot" not in new["groups"]


def test_git_source_in_subdirectory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo_root = tmp_path / "repo"
    repo_root.mkdir()
    copy_example(repo_root / "fleet")
    git_init(repo_root)
    assert main(["validate", str(repo_root / "fleet"), "--rev", "HEAD"]) == 0
    assert main(["render", str(repo_root / "fleet"), "--rev", "HEAD", "--device", "lab-01"]) == 0
    assert "shelf-detector" in capsys.readouterr().out


def test_device_load_reads_only_what_concerns_it(tmp_path: Path) -> None:
    root = copy_example(tmp_path / "fleet")

    class Counting(DirSource):
        reads: list[str] = []

        def read(self, path: str) -> bytes | None:
            self.reads.append(path)
            return super().read(path)

    from reconciler.fleet.resolve import render_device

    source = Counting(root)
    render_device(FleetView(source), "cam-south-01")
    touched = {p.split("/")[0] if "/" in p else p for p in source.reads}
    assert touched <= {"fleet.yaml", "groups", "models", "devices"}
    assert [p for p in source.reads if p.startswith("devices/")] == ["devices/cam-south-01.yaml"]
    # only the models it runs
    assert sorted(p for p in source.reads if p.startswith("models/")) == [
        "models/people-counter.yaml", "models/wildlife-id.yaml"]


def test_plan_lists_devices_and_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = git_init(copy_example(tmp_path / "fleet"))
    base = git(root, "rev-parse", "HEAD")
    pilot = root / "groups/pilot.yaml"
    pilot.write_text(pilot.read_text().replace('version: "2.0.0"', 'version: "1.0.0"').replace(
        "min_time_between_escalations: 5", "min_time_between_escalations: 10"))
    ns = root / "groups/north-stores.yaml"
    ns.write_text(ns.read_text().replace('version: "1.1.0"', 'version: "1.0.0"'))
    head = commit_all(root, "roll back shelf detector and counter")
    assert main(["plan", base, head, "--repo", str(root), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by = {d["device"]: d for d in doc["devices"]}
    assert set(by) == {"cam-north-01", "cam-north-02", "lab-01"} and doc["affected"] == 3
    assert any("shelf-detector 2.0.0 -> 1.0.0 (downgrade" in c for c in by["lab-01"]["changes"])
    assert any("people-counter 1.1.0 -> 1.0.0 (downgrade" in c for c in by["cam-north-02"]["changes"])
    assert any("min_time_between_escalations 5.0 -> 10.0" in c for c in by["cam-north-01"]["changes"])
    assert main(["plan", base, head, "--repo", str(root), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| `lab-01` |" in md and "**3 devices affected**" in md
    assert main(["plan", base, head, "--repo", str(root)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("3 devices affected")


def test_plan_upgrade_add_remove_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = git_init(minimal_fleet(tmp_path / "f"))
    base = git(root, "rev-parse", "HEAD")
    g = root / "groups/g.yaml"
    g.write_text(g.read_text().replace('"1.0"', '"2.0"') + "  config: {runtime: docker}\n")
    write(root, "devices/d3.yaml", "apiVersion: fleet/v1\nkind: Device\nmetadata: {name: d3}\nspec: {groups: [g]}\n")
    (root / "devices/d2.yaml").unlink()
    head = commit_all(root, "upgrade")
    assert main(["plan", base, head, "--repo", str(root)]) == 0
    out = capsys.readouterr().out
    assert "~ model m 1.0 -> 2.0 (upgrade, group g)" in out
    assert "~ config runtime: process -> docker" in out
    assert "d3 (added)" in out and "d2 (removed)" in out
    assert "3 devices affected" in out


def test_plan_of_one_group_change_does_not_parse_every_device(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "f")
    for i in range(200):
        write(root, f"devices/x{i}.yaml", f"apiVersion: fleet/v1\nkind: Device\nmetadata: {{name: x{i}}}\nspec: {{}}\n")
    git_init(root)
    base = git(root, "rev-parse", "HEAD")
    g = root / "groups/g.yaml"
    g.write_text(g.read_text().replace('"1.0"', '"2.0"'))
    head = commit_all(root, "bump")
    import reconciler.fleet.view as view_mod
    from reconciler.fleet import change

    parsed: list[str] = []
    real = view_mod.parse

    def counting(path: str, text: bytes | str, *limits):  # type: ignore[no-untyped-def]
        parsed.append(path)
        return real(path, text, *limits)

    view_mod.parse = counting
    try:
        result = change.plan(pygit2.Repository(str(root)), base, head)
    finally:
        view_mod.parse = real
    assert [d.device for d in result.devices] == ["d1"]
    assert len([p for p in parsed if p.startswith("devices/")]) <= 2


def _hook_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(__import__('sys').executable).parent}:{env['PATH']}"
    return env


def test_pre_receive_refuses_invalid_push_and_accepts_valid(tmp_path: Path) -> None:
    server = tmp_path / "server.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(server)], check=True)
    shutil.copy(ROOT / "hooks/pre-receive", server / "hooks/pre-receive")
    work = git_init(minimal_fleet(tmp_path / "work"))
    git(work, "remote", "add", "origin", str(server))
    env = _hook_env()
    ok = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    g = work / "groups/g.yaml"
    g.write_text(g.read_text().replace('"1.0"', '"9.9"'))
    bad = commit_all(work, "pin a version that does not exist")
    refused = subprocess.run(["git", "push", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)
    assert refused.returncode != 0
    assert "groups/g.yaml:6:" in refused.stderr and "has no version '9.9'" in refused.stderr
    assert git(server, "rev-parse", "main") != bad
    # status branches pass through unvalidated, even when main's content would be invalid
    st = subprocess.run(["git", "push", "-q", "origin", f"{bad}:refs/heads/status/d1"], cwd=work, env=env,
                        capture_output=True, text=True)
    assert st.returncode == 0, st.stderr
    g.write_text(g.read_text().replace('"9.9"', '"2.0"'))
    good = commit_all(work, "fix")
    ok2 = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)
    assert ok2.returncode == 0, ok2.stderr
    assert git(server, "rev-parse", "main") == good


def test_pre_commit_validates_the_index(tmp_path: Path) -> None:
    work = git_init(minimal_fleet(tmp_path / "work"))
    shutil.copy(ROOT / "hooks/pre-commit", work / ".git/hooks/pre-commit")
    env = _hook_env()
    g = work / "groups/g.yaml"
    g.write_text(g.read_text().replace('"1.0"', '"9.9"'))
    git(work, "add", "-A")
    res = subprocess.run(["git", "commit", "-m", "bad"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "has no version '9.9'" in res.stderr
    g.write_text(g.read_text().replace('"9.9"', '"2.0"'))
    git(work, "add", "-A")
    res = subprocess.run(["git", "commit", "-qm", "good"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_schemas_describe_every_property_and_reject_unknown() -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                assert "description" in prop, f"{where}.{name}"
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, where
            for k, v in node.items():
                if k not in ("if", "then"):  # conditions of a rule restate documented properties
                    walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    for path in (ROOT / "schemas").glob("*.schema.json"):
        doc = json.loads(path.read_text())
        assert doc["$schema"].endswith("2020-12/schema")
        walk(doc, path.name)


def test_validate_from_git_matches_directory(tmp_path: Path) -> None:
    root = git_init(minimal_fleet(tmp_path / "f"))
    (root / "groups/g.yaml").write_text((root / "groups/g.yaml").read_text().replace('"1.0"', '"9"'))
    commit_all(root, "bad")
    repo = pygit2.Repository(str(root))
    a = [p.format() for p in validate(FleetView(DirSource(root)))]
    b = [p.format() for p in validate(FleetView(GitSource(repo, "HEAD")))]
    assert a == b and a
