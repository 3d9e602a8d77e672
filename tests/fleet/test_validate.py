"""validate: schema and semantic rules, each problem located as file:line:column (field)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.fleet.source import DirSource
from reconciler.fleet.validate import validate
from reconciler.fleet.view import FleetView
from reconciler.main import main
from tests.fleetutil import copy_example, minimal_fleet, write


def problems(root: Path) -> list[str]:
    return [p.format() for p in validate(FleetView(DirSource(root)))]


def test_example_fleet_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fleetutil import EXAMPLE

    assert main(["validate", str(EXAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out


def test_example_fleet_covers_the_documented_features() -> None:
    import yaml

    from tests.fleetutil import EXAMPLE

    docs = {p.relative_to(EXAMPLE).as_posix(): yaml.safe_load(p.read_text()) for p in EXAMPLE.rglob("*.yaml")}
    groups = [d for k, d in docs.items() if k.startswith("groups/")]
    devices = [d for k, d in docs.items() if k.startswith("devices/")]
    models = [d for k, d in docs.items() if k.startswith("models/")]
    assert len(groups) >= 3 and len({g["spec"].get("priority", 0) for g in groups}) >= 3
    assert any("selector" in g["spec"] for g in groups)
    assert len(devices) >= 5 and all(d["metadata"].get("labels") for d in devices)
    assert len(models) >= 2 and all(len(m["spec"]["versions"]) >= 2 for m in models)
    assert any("access" in m["spec"] for m in models)
    dets = [d for g in groups for d in g["spec"].get("detectors", [])]
    assert any(d.get("always_return_edge_prediction") and d.get("disable_cloud_escalation") for d in dets)
    assert any(d.get("always_return_edge_prediction") and "min_time_between_escalations" in d for d in dets)
    assert any("always_return_edge_prediction" not in d and "disable_cloud_escalation" not in d for d in dets)
    drivers = {g["spec"].get("config", {}).get("storage", {}).get("driver") for g in groups}
    drivers.add(docs["fleet.yaml"]["spec"]["defaults"]["storage"]["driver"])
    assert {"filesystem", "s3"} <= drivers
    assert any("inferenceLog" in g["spec"].get("config", {}) for g in groups)
    assert "repo" in docs["fleet.yaml"]["spec"]["registries"]
    for p in EXAMPLE.rglob("*.yaml"):
        assert p.read_text().startswith("# yaml-language-server: $schema="), p


CASES = [
    # (file, replace-from, replace-to, expected location prefix, expected message part)
    ("groups/g.yaml", 'models: [{name: m, version: "1.0"}]', 'models: [{name: nope, version: "1.0"}]',
     "groups/g.yaml:6:", "unknown model 'nope'"),
    ("groups/g.yaml", 'models: [{name: m, version: "1.0"}]', 'models: [{name: m, version: "9.9"}]',
     "groups/g.yaml:6:", "has no version '9.9'"),
    ("groups/g.yaml", 'models: [{name: m, version: "1.0"}]',
     'models: [{name: m, version: "1.0"}, {name: m, version: "2.0"}]', "groups/g.yaml:6:", "pins model 'm' twice"),
    ("groups/g.yaml", "members: [d1]", "members: [d1, ghost]", "groups/g.yaml:5:", "device 'ghost', which has no file"),
    ("groups/g.yaml", "metadata: {name: g}", "metadata: {name: other}", "groups/g.yaml:3:", "differs from the file name"),
    ("groups/g.yaml", "members: [d1]", "members: [d1]\n  colour: red", "groups/g.yaml:6:3", "unknown field 'colour'"),
    ("groups/g.yaml", "members: [d1]", "members: [d1]\n  priority: high", "groups/g.yaml:6:3", "expected an integer"),
    ("groups/g.yaml", "members: [d1]", "members: [d1\n", "groups/g.yaml:", "malformed YAML"),
    ("fleet.yaml", "defaults: {runtime: process, registry: repo}",
     "defaults: {runtime: process, registry: repo, inferenceLog: {localInferenceStorage: 100Mi}}",
     "fleet.yaml:7:", "localInferenceStorage and pageSize go together: set both or neither"),
    ("fleet.yaml", "defaults: {runtime: process, registry: repo}",
     "defaults: {runtime: process, registry: repo, inferenceLog: {localInferenceStorage: 100MX, pageSize: 100}}",
     "fleet.yaml:7:", "malformed size '100MX'"),
    ("fleet.yaml", "defaults: {runtime: process, registry: repo}",
     "defaults: {runtime: process, registry: repo, storage: {driver: s3, s3: {region: eu}}}",
     "fleet.yaml:7:", "s3 storage needs s3.region, s3.bucket and s3.path"),
    ("fleet.yaml", "defaults: {runtime: process, registry: repo}",
     "defaults: {runtime: process, registry: repo, storage: {driver: filesystem}}",
     "fleet.yaml:7:", "filesystem storage needs filesystem.path"),
    ("fleet.yaml", "repo: {host: 127.0.0.1, port: 5000}", "repo: {host: 127.0.0.1, port: 5000, password: hunter2}",
     "fleet.yaml:6:", "looks like a secret"),
    ("models/m.yaml", "command: [sleep, \"100\"]}\n    \"2.0\"",
     "command: [sleep, \"100\"], env: {API_TOKEN: abcdef}}\n    \"2.0\"", "models/m.yaml:", "'API_TOKEN' looks like a secret"),
    ("models/m.yaml", "artifact: repo/m@sha256:" + "a" * 64, "artifact: repo/m:latest",
     "models/m.yaml:6:", "not pinned by digest"),
    ("models/m.yaml", "\"1.0\": {artifact", "\"1.0\": {requirements: {runtime: [docker]}, artifact",
     "models/m.yaml:6:", "needs runtime docker; device 'd1' uses"),
]


@pytest.mark.parametrize(("file", "old", "new", "where", "message"), CASES, ids=[c[4][:30] for c in CASES])
def test_rule_is_reported_with_location(tmp_path: Path, file: str, old: str, new: str, where: str,
                                        message: str) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    assert problems(root) == []
    path = root / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    found = problems(root)
    assert any(p.startswith(where) and message in p for p in found), found


def test_secret_value_is_never_echoed(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    write(root, "devices/d2.yaml", """
        apiVersion: fleet/v1
        kind: Device
        metadata: {name: d2, annotations: {note: "https://bob:s3cretpw@example.com/x"}}
        spec: {}
        """)
    found = problems(root)
    assert any("looks like a secret" in p for p in found)
    assert not any("s3cretpw" in p for p in found)


def test_equal_priority_conflict_names_device_model_versions_and_groups(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    write(root, "groups/h.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: h}
        spec:
          selector: {matchLabels: {site: s1}}
          models: [{name: m, version: "2.0"}]
        """)
    found = problems(root)
    conflict = [p for p in found if "equal priority" in p]
    assert len(conflict) == 1, found
    assert "device 'd1'" in conflict[0] and "'1.0' from group 'g'" in conflict[0]
    assert "'2.0' from group 'h'" in conflict[0] and "model 'm'" in conflict[0]
    # a higher priority resolves it
    (root / "groups/h.yaml").write_text((root / "groups/h.yaml").read_text().replace("spec:\n", "spec:\n  priority: 5\n"))
    assert problems(root) == []


def test_protected_model_outside_access_list(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    text = (root / "models/m.yaml").read_text().replace("spec:\n", "spec:\n  access: {groups: [vip]}\n")
    (root / "models/m.yaml").write_text(text)
    found = problems(root)
    assert any(p.startswith("groups/g.yaml:6:") and "protected" in p and "device 'd1'" in p for p in found), found


def test_detector_rules(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    write(root, "groups/all.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: all}
        spec:
          detectors:
            - {detector_id: det_a00000000000000000000000000, model: m}
            - {detector_id: det_b00000000000000000000000000, model: other}
        """)
    write(root, "groups/g2.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: g2}
        spec:
          members: [d1]
          detectors: [{detector_id: det_a00000000000000000000000000, model: m}]
        """)
    found = problems(root)
    assert any(p.startswith("groups/all.yaml:7:") and "model 'other'" in p for p in found), found
    assert any("det_a00000000000000000000000000" in p and "unique" in p and "device 'd1'" in p for p in found), found


def test_escalation_flags_follow_groundlight(tmp_path: Path) -> None:
    """Their rules (disable needs always, an interval above 0) and the seed's (the interval only with edge answers
    and escalation on), as schema if/then so that an editor flags them too; and their id format."""
    root = minimal_fleet(tmp_path / "fleet")
    write(root, "groups/all.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: all}
        spec:
          detectors:
            - {detector_id: det_c00000000000000000000000000, model: m, min_time_between_escalations: 3}
            - {detector_id: det_d00000000000000000000000000, model: m, always_return_edge_prediction: true,
               disable_cloud_escalation: true, min_time_between_escalations: 3}
            - {detector_id: det_e00000000000000000000000000, model: m, disable_cloud_escalation: true}
            - {detector_id: det_f00000000000000000000000000, model: m, always_return_edge_prediction: true,
               min_time_between_escalations: 0}
            - {detector_id: det_doorway, model: m}
        """)
    found = problems(root)
    assert any(p.startswith("groups/all.yaml:6:") and "only valid when" in p for p in found), found
    assert any(p.startswith("groups/all.yaml:8:") and "only valid when" in p for p in found), found
    assert any(p.startswith("groups/all.yaml:9:") and "disable_cloud_escalation: true requires "
               "always_return_edge_prediction: true" in p for p in found), found
    assert any(p.startswith("groups/all.yaml:11:") and "must be more than 0, got 0" in p for p in found), found
    assert any(p.startswith("groups/all.yaml:12:") and "invalid detector_id 'det_doorway'" in p
               and "det_ followed by 27 letters or digits" in p for p in found), found
    assert len(found) == 5, found


def test_yaml_1_2_booleans(tmp_path: Path) -> None:
    """yes/no/on/off are strings (YAML 1.2 core, as editors read them): a flag given yes is a located type error
    with a hint; a label on is the string "on"."""
    root = minimal_fleet(tmp_path / "fleet")
    write(root, "groups/all.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: all}
        spec:
          detectors:
            - detector_id: det_a00000000000000000000000000
              model: m
              always_return_edge_prediction: yes
        """)
    (root / "devices/d1.yaml").write_text((root / "devices/d1.yaml").read_text().replace(
        "labels: {site: s1}", "labels: {site: s1, power: on, since: 2024-01-01}"))
    found = problems(root)
    assert found == ["groups/all.yaml:8:7: error: expected true or false, got 'yes' (YAML 1.2 reads yes as a "
                     "string: write true or false) (spec.detectors[0].always_return_edge_prediction)"], found
    view = FleetView(DirSource(root))
    assert view.device("d1") is not None and view.device("d1").labels == {"site": "s1", "power": "on", "since": "2024-01-01"}


def test_all_problems_in_one_run_and_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    (root / "groups/g.yaml").write_text((root / "groups/g.yaml").read_text().replace('"1.0"', '"7"'))
    (root / "devices/d2.yaml").write_text("kind: [")
    assert main(["validate", str(root)]) == 1
    out = capsys.readouterr().out
    assert "groups/g.yaml:6:" in out and "devices/d2.yaml:" in out and "2 problems" in out
    assert "Traceback" not in out
    assert main(["validate", str(root), "--format", "json"]) == 1
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and {p["file"] for p in doc["problems"]} == {"groups/g.yaml", "devices/d2.yaml"}


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "xml"]) == 2
    assert main(["validate", "/nonexistent/dir"]) == 1
    assert "no such fleet directory" in capsys.readouterr().err


def test_missing_fleet_file(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    (root / "fleet.yaml").unlink()
    assert any(p.startswith("fleet.yaml:1:1") and "missing" in p for p in problems(root))


def test_example_copy_still_valid_after_copy(tmp_path: Path) -> None:
    assert problems(copy_example(tmp_path / "f")) == []


def test_a_device_named_like_a_date_stays_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # YAML 1.1 would read 2024-01-01 as a date, which no schema (or git path) takes; YAML 1.2 reads a string.
    root = copy_example(tmp_path / "fleet")
    text = (root / "devices" / "cam-north-01.yaml").read_text().replace("cam-north-01", "2024-01-01")
    (root / "devices" / "2024-01-01.yaml").write_text(text)
    assert main(["validate", str(root)]) == 0, capsys.readouterr()
    capsys.readouterr()
    assert main(["render", str(root), "--device", "2024-01-01"]) == 0
    assert "device: '2024-01-01'" in capsys.readouterr().out


def test_a_value_json_cannot_hold_is_located_not_a_crash(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    root = copy_example(tmp_path / "fleet")
    path = root / "devices" / "cam-north-01.yaml"
    path.write_text(path.read_text().replace("site: north", "site: !!binary aGVsbG8="))
    assert main(["validate", str(root)]) == 1
    out, err = capsys.readouterr()
    assert "devices/cam-north-01.yaml:7:" in out + err and "internal error" not in out + err


def test_two_models_claiming_one_port_is_an_error_naming_both(tmp_path: Path) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    for name in ("a", "b"):
        write(root, f"models/{name}.yaml", f"""
            apiVersion: fleet/v1
            kind: Model
            metadata: {{name: {name}}}
            spec:
              versions:
                "1.0": {{artifact: repo/{name}@sha256:{"c" * 64}, command: [sleep, "100"], port: 8080}}
            """)
    write(root, "groups/all.yaml", """
        apiVersion: fleet/v1
        kind: Group
        metadata: {name: all}
        spec:
          models: [{name: a, version: "1.0"}, {name: b, version: "1.0"}]
        """)
    found = problems(root)
    assert found == ["models/b.yaml:6:128: error: devices 'd1', 'd2' (2) get model 'a' 1.0 (group 'all') and model 'b' "
                     "1.0 (group 'all'), which both claim port 8080 (spec.versions.1.0.port)"], found


def test_device_naming_a_group_that_does_not_exist_is_a_warning(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = minimal_fleet(tmp_path / "fleet")
    (root / "devices/d2.yaml").write_text((root / "devices/d2.yaml").read_text().replace("spec: {}", "spec: {groups: [gg]}"))
    assert main(["validate", str(root)]) == 0
    out = capsys.readouterr().out
    assert ("devices/d2.yaml:4:17: warning: device file names group 'gg', which has no file groups/gg.yaml and no "
            "model's access list names: it gives the device nothing: did you mean 'g'? (spec.groups[0])") in out, out
    assert out.rstrip().endswith("valid (1 warning)"), out
    # a group named by a model's access list is real, though it has no file: no warning
    (root / "models/m.yaml").write_text((root / "models/m.yaml").read_text().replace(
        "spec:\n", "spec:\n  access: {groups: [g, gg]}\n"))
    assert main(["validate", str(root)]) == 0
    assert "warning" not in capsys.readouterr().out
