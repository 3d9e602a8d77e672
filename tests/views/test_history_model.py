"""``reconciler history --model``: which devices' desired version of a model changed, commit by commit.

The fleet below walks through every kind of change that can move a model on a device (a pin, a group's
members, a device moved between groups, a model removed from a group, a device file, a model file, fleet.yaml,
devices added and removed, an invalid device file and an invalid fleet.yaml) on fleet-config/ plus look-alike
devices that differ only in their name, so that devices resolved alike are told apart where their names
matter (members lists, a protected model's access list).  The expected events were recorded with the
plan-per-commit implementation and pin its output.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest

from reconciler.errors import InvalidConfig
from reconciler.fleet.change import compare, plan
from reconciler.fleet.resolve import Resolver
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FleetView
from reconciler.main import main
from reconciler.views.fleetrepo import open_fleet_repo
from reconciler.views.fleetstates import FleetStates
from reconciler.views.history import desired_for_model
from tests.fleetutil import copy_example, git

T0 = 1_700_000_000
LOOK_ALIKES = [f"cam-east-{i:02d}" for i in range(1, 7)]


def _device(name: str, site: str, extra: str = "") -> str:
    return (f"apiVersion: fleet/v1\nkind: Device\nmetadata:\n  name: {name}\n  labels: {{site: {site}, arch: amd64, "
            f"role: camera}}\nspec:\n  groups: []\n{extra}")


def _commit(work: Path, message: str, n: int) -> str:
    when = f"{T0 + n * 60} +0000"
    env = {**os.environ, "GIT_AUTHOR_NAME": "Alice Ops", "GIT_AUTHOR_EMAIL": "alice@acme.example",
           "GIT_COMMITTER_NAME": "Alice Ops", "GIT_COMMITTER_EMAIL": "alice@acme.example",
           "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=work, check=True, env=env)
    return git(work, "rev-parse", "HEAD")


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


PILOT_PIN = '    - name: people-counter\n      version: "1.0.0"                   # a downgrade is an ordinary pin\n'
WILDLIFE_PIN = '    - name: wildlife-id\n      version: "1.0.0"\n'
# (commit message, [(file, text to replace, replacement)]); no text to replace: write the file; no replacement:
# delete it
STEPS: list[tuple[str, list[tuple[str, str | None, str | None]]]] = [
    ("pin: all people-counter 1.1.0", [("groups/all.yaml", 'version: "1.0.0"', 'version: "1.1.0"')]),
    ("members: cam-north-02 and cam-east-03 join pilot",
     [("groups/pilot.yaml", "    - lab-01\n", "    - lab-01\n    - cam-north-02\n    - cam-east-03\n")]),
    ("move: lab-01 from pilot to conservation",
     [("groups/pilot.yaml", "    - lab-01\n", ""),
      ("groups/conservation.yaml", "    - cam-south-01\n", "    - cam-south-01\n    - lab-01\n")]),
    ("pilot drops people-counter", [("groups/pilot.yaml", PILOT_PIN, "")]),
    ("cam-south-01 moves north", [("devices/cam-south-01.yaml", "site: south", "site: north")]),
    ("cam-east-02 role only", [("devices/cam-east-02.yaml", "role: camera", "role: gateway")]),
    ("notes", [("NOTES.md", None, "unrelated\n")]),
    ("people-counter 1.0.0 port", [("models/people-counter.yaml", "port: 8101", "port: 8111")]),
    ("pin: all people-counter back to 1.0.0", [("groups/all.yaml", 'version: "1.1.0"', 'version: "1.0.0"')]),
    ("wildlife-id everywhere (protected: only some may run it)",
     [("models/wildlife-id.yaml", "groups: [conservation]", "groups: [conservation]\n    devices: [cam-east-05]"),
      ("groups/all.yaml", "  models:\n", "  models:\n" + WILDLIFE_PIN)]),
    ("wildlife-id off all", [("groups/all.yaml", WILDLIFE_PIN, "")]),
    ("cam-east-07 added, cam-east-01 retired",
     [("devices/cam-east-07.yaml", None, _device("cam-east-07", "north")), ("devices/cam-east-01.yaml", "", None)]),
    ("cam-east-04 broken", [("devices/cam-east-04.yaml", "spec:\n", "spec: [\n")]),
    ("cam-east-04 fixed and moved north",
     [("devices/cam-east-04.yaml", "spec: [\n", "spec:\n"), ("devices/cam-east-04.yaml", "site: east", "site: north")]),
    ("fleet.yaml broken", [("fleet.yaml", "  defaults:\n", "  defaults: [\n")]),
    ("fleet.yaml fixed, default memory 768m",
     [("fleet.yaml", "  defaults: [\n", "  defaults:\n"), ("fleet.yaml", "      memory: 512m", "      memory: 768m")]),
    ("gateway-01 declares pilot", [("devices/gateway-01.yaml", "spec:\n", "spec:\n  groups: [pilot]\n")]),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = copy_example(tmp_path_factory.mktemp("history-model") / "fleet")
    for name in LOOK_ALIKES:
        (work / "devices" / f"{name}.yaml").write_text(_device(name, "east"))
    git(work, "init", "-q", "-b", "main")
    _commit(work, "initial fleet", 1)
    for n, (message, edits) in enumerate(STEPS, start=2):
        for rel, old, new in edits:
            if new is None:
                (work / rel).unlink()
            elif old is None:
                (work / rel).write_text(new)
            else:
                _edit(work / rel, old, new)
        _commit(work, message, n)
    return work


# recorded from the plan-per-commit implementation
EXPECTED: dict[str, list[tuple[str, list[str]]]] = {"people-counter": [("initial fleet",
                     ["cam-east-01: + model people-counter 1.0.0 (group all)",
                      "cam-east-02: + model people-counter 1.0.0 (group all)",
                      "cam-east-03: + model people-counter 1.0.0 (group all)",
                      "cam-east-04: + model people-counter 1.0.0 (group all)",
                      "cam-east-05: + model people-counter 1.0.0 (group all)",
                      "cam-east-06: + model people-counter 1.0.0 (group all)",
                      "cam-north-01: + model people-counter 1.0.0 (group pilot)",
                      "cam-north-02: + model people-counter 1.1.0 (group north-stores)",
                      "cam-south-01: + model people-counter 1.0.0 (group all)",
                      "gateway-01: + model people-counter 1.0.0 (group all)",
                      "lab-01: + model people-counter 1.0.0 (group pilot)"]),
                    ("pin: all people-counter 1.1.0",
                     ["cam-east-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-east-02: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-east-03: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-east-04: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-east-05: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-east-06: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-south-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "gateway-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)"]),
                    ("members: cam-north-02 and cam-east-03 join pilot",
                     ["cam-east-03: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group pilot)",
                      "cam-north-02: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group pilot)"]),
                    ("move: lab-01 from pilot to conservation",
                     ["lab-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)"]),
                    ("pilot drops people-counter",
                     ["cam-east-03: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group all)",
                      "cam-north-01: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group north-stores)",
                      "cam-north-02: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group north-stores)"]),
                    ("cam-south-01 moves north", ["cam-south-01: ~ model people-counter 1.1.0: group changed"]),
                    ("pin: all people-counter back to 1.0.0",
                     ["cam-east-01: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "cam-east-02: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "cam-east-03: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "cam-east-04: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "cam-east-05: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "cam-east-06: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "gateway-01: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)",
                      "lab-01: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)"]),
                    ("wildlife-id off all",
                     ["cam-east-01: + model people-counter 1.0.0 (group all)",
                      "cam-east-02: + model people-counter 1.0.0 (group all)",
                      "cam-east-03: + model people-counter 1.0.0 (group all)",
                      "cam-east-04: + model people-counter 1.0.0 (group all)",
                      "cam-east-06: + model people-counter 1.0.0 (group all)",
                      "cam-north-01: + model people-counter 1.1.0 (group north-stores)",
                      "cam-north-02: + model people-counter 1.1.0 (group north-stores)",
                      "gateway-01: + model people-counter 1.0.0 (group all)"]),
                    ("cam-east-07 added, cam-east-01 retired",
                     ["cam-east-01: - model people-counter 1.0.0",
                      "cam-east-07: + model people-counter 1.1.0 (group north-stores)"]),
                    ("cam-east-04 fixed and moved north",
                     ["cam-east-04: + model people-counter 1.1.0 (group north-stores)"]),
                    ("fleet.yaml broken", ["! fleet invalid at this commit: fleet.yaml at <commit> is invalid"]),
                    ("fleet.yaml fixed, default memory 768m",
                     ["cam-east-02: ~ model people-counter 1.0.0: artifact, image, registry changed",
                      "cam-east-03: ~ model people-counter 1.0.0: artifact, image, registry changed",
                      "cam-east-04: ~ model people-counter 1.1.0: artifact, image, registry changed",
                      "cam-east-05: ~ model people-counter 1.0.0: artifact, image, registry changed",
                      "cam-east-06: ~ model people-counter 1.0.0: artifact, image, registry changed",
                      "cam-east-07: ~ model people-counter 1.1.0: artifact, image, registry changed",
                      "cam-north-01: ~ model people-counter 1.1.0: artifact, image, registry changed",
                      "cam-north-02: ~ model people-counter 1.1.0: artifact, image, registry changed",
                      "cam-south-01: ~ model people-counter 1.1.0: artifact, image, registry changed",
                      "gateway-01: ~ model people-counter 1.0.0: artifact, image, registry changed",
                      "lab-01: ~ model people-counter 1.0.0: artifact, image, registry changed"])],
 "shelf-detector": [("initial fleet",
                     ["cam-north-01: + model shelf-detector 2.0.0 (group pilot)",
                      "lab-01: + model shelf-detector 2.0.0 (group pilot)"]),
                    ("members: cam-north-02 and cam-east-03 join pilot",
                     ["cam-east-03: + model shelf-detector 2.0.0 (group pilot)",
                      "cam-north-02: + model shelf-detector 2.0.0 (group pilot)"]),
                    ("move: lab-01 from pilot to conservation", ["lab-01: - model shelf-detector 2.0.0"]),
                    ("wildlife-id off all",
                     ["cam-east-03: + model shelf-detector 2.0.0 (group pilot)",
                      "cam-north-01: + model shelf-detector 2.0.0 (group pilot)",
                      "cam-north-02: + model shelf-detector 2.0.0 (group pilot)"]),
                    ("fleet.yaml broken", ["! fleet invalid at this commit: fleet.yaml at <commit> is invalid"]),
                    ("fleet.yaml fixed, default memory 768m",
                     ["cam-east-03: ~ model shelf-detector 2.0.0: artifact, image, registry changed",
                      "cam-north-01: ~ model shelf-detector 2.0.0: artifact, image, registry changed",
                      "cam-north-02: ~ model shelf-detector 2.0.0: artifact, image, registry changed"]),
                    ("gateway-01 declares pilot", ["gateway-01: + model shelf-detector 2.0.0 (group pilot)"])],
 "wildlife-id": [("initial fleet", ["cam-south-01: + model wildlife-id 1.1.0 (group conservation)"]),
                 ("move: lab-01 from pilot to conservation",
                  ["lab-01: + model wildlife-id 1.1.0 (group conservation)"]),
                 ("wildlife-id everywhere (protected: only some may run it)",
                  ["cam-east-05: + model wildlife-id 1.0.0 (group all)"]),
                 ("wildlife-id off all", ["cam-east-05: - model wildlife-id 1.0.0"]),
                 ("fleet.yaml broken", ["! fleet invalid at this commit: fleet.yaml at <commit> is invalid"]),
                 ("fleet.yaml fixed, default memory 768m",
                  ["cam-south-01: ~ model wildlife-id 1.1.0: artifact, registry changed",
                   "lab-01: ~ model wildlife-id 1.1.0: artifact, registry changed"])]}


def _events(work: Path, model: str, since: datetime | None = None) -> list[tuple[str, list[str]]]:
    fleet = open_fleet_repo(str(work))
    return [(e.message, [re.sub(r"\b[0-9a-f]{40}\b", "<commit>", line) for line in e.lines])
            for e in desired_for_model(fleet, model, since)]


@pytest.mark.parametrize("model", ["people-counter", "wildlife-id", "shelf-detector"])
def test_model_history_events_are_pinned(work: Path, model: str) -> None:
    assert _events(work, model) == EXPECTED[model]


def test_model_history_since_starts_from_the_state_before_the_window(work: Path) -> None:
    # the window's first commit is compared with its parent, not treated as the fleet's beginning
    window = EXPECTED["people-counter"][6:]
    assert window[0][0] == "pin: all people-counter back to 1.0.0"  # made at T0 + 10 minutes
    assert _events(work, "people-counter", datetime.fromtimestamp(T0 + 9 * 60, UTC)) == window


def test_model_history_cli_json_and_text(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["history", "--model", "people-counter", "--repo", str(work), "--format", "json"]) == 0
    events = json.loads(capsys.readouterr().out)["events"]
    assert [(e["message"], e["changes"]) for e in events if e["kind"] == "desired"] == [
        (m, [line.replace("<commit>", events[-2]["commit"]) for line in lines]) for m, lines in EXPECTED["people-counter"]]
    assert main(["history", "--model", "people-counter", "--repo", str(work)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[1].endswith("  desired   " + events[0]["commit"][:12] + "  Alice Ops <alice@acme.example>: initial fleet")
    assert text[2:4] == ["    cam-east-01: + model people-counter 1.0.0 (group all)",
                         "    cam-east-02: + model people-counter 1.0.0 (group all)"]
    assert sum(1 for line in text if "  desired   " in line) == len(EXPECTED["people-counter"])


def _plan_lines(repo: pygit2.Repository, base: pygit2.Commit, head: pygit2.Commit) -> object:
    try:
        result = plan(repo, str(base.id), str(head.id))
    except InvalidConfig as exc:
        return ("invalid", exc.summary)
    return [(d.device, d.lines) for d in result.devices if d.status != "invalid"]


def _states_lines(states: FleetStates, base: pygit2.Commit, head: pygit2.Commit) -> object:
    try:
        return states.changes(base, head)
    except InvalidConfig as exc:
        return ("invalid", exc.summary)


def _first_lines(repo: pygit2.Repository, commit: pygit2.Commit) -> list[tuple[str, tuple[str, ...]]]:
    view = FleetView(GitSource(repo, commit.id))
    resolver = Resolver(view, all_groups=True)
    changes = [compare(d, None, resolver.resolve_one(d)) for d in view.device_names()]
    return [(c.device, c.lines) for c in changes if c is not None]


def _assert_like_plan(work: Path) -> int:
    """Every commit's device lines (all of them, not only one model's) equal ``plan``'s; the root commit's
    equal a full resolve's.  Returns how many device lines were compared."""
    repo = pygit2.Repository(str(work))
    chain = [repo[repo.head.target]]
    while chain[-1].parent_ids:
        chain.append(chain[-1].parents[0])
    chain.reverse()
    states = FleetStates(repo)
    assert states.initial(chain[0]) == _first_lines(repo, chain[0])
    compared = 0
    for base, head in itertools.pairwise(chain):
        expected = _plan_lines(repo, base, head)
        assert _states_lines(states, base, head) == expected, head.message
        compared += len(expected) if isinstance(expected, list) else 0
    return compared


def test_every_commit_changes_what_plan_says(work: Path) -> None:
    assert _assert_like_plan(work) > 40


def test_names_that_cannot_share_a_parse(tmp_path: Path) -> None:
    """Device files that differ from a look-alike in more than metadata.name, or whose names YAML could read
    as something else, are parsed on their own; odd files in devices/ are not devices."""
    work = copy_example(tmp_path / "fleet")
    devices, groups = work / "devices", work / "groups"
    (devices / "cam-east-01.yaml").write_text(_device("cam-east-01", "east"))
    (devices / "gw1.yaml").write_text(_device("gw1", "east"))  # no '-': not a shareable name
    (devices / "1234.yaml").write_text(_device("1234", "east"))  # a number to YAML: an invalid name
    for name in ("cam-east-10", "cam-east-20"):  # each name twice: in metadata.name and as a label value
        (devices / f"{name}.yaml").write_text(_device(name, name))
    for name in ("cam-east-30", "cam-east-31"):  # each name once, but not as metadata.name
        (devices / f"{name}.yaml").write_text(_device("misnamed", name))
    (groups / "misnamed.yaml").write_text(
        "apiVersion: fleet/v1\nkind: Group\nmetadata: {name: misnamed}\nspec:\n  priority: 30\n"
        "  selector: {matchLabels: {site: cam-east-30}}\n  models: [{name: shelf-detector, version: \"2.0.0\"}]\n")
    (devices / "cam-east-11.yml").write_text(_device("cam-east-11", "east"))
    (devices / ".cam-east-12.yaml").write_text(_device("cam-east-12", "east"))
    (devices / "old").mkdir()
    (devices / "old" / "cam-east-13.yaml").write_text(_device("cam-east-13", "east"))
    (devices / "cam-east-14.yaml").write_text(_device("cam-east-14", "east").replace("name: cam-east-14",
                                                                                      "name: cam-east-99"))
    git(work, "init", "-q", "-b", "main")
    _commit(work, "initial fleet", 1)
    _edit(groups / "north-stores.yaml", "      site: north", "      site: cam-east-10")
    _commit(work, "north-stores selects site cam-east-10", 2)
    for n, name in enumerate(["gw1.yaml", "cam-east-11.yml", ".cam-east-12.yaml", "old/cam-east-13.yaml",
                              "cam-east-14.yaml"]):
        _edit(devices / name, "site: east", "site: cam-east-10")
        _commit(work, f"{name} moves to site cam-east-10", 3 + n)
    _edit(groups / "all.yaml", 'version: "1.0.0"', 'version: "1.1.0"')
    _commit(work, "pin: all people-counter 1.1.0", 10)
    assert _assert_like_plan(work) >= 10
    events = dict(_events(work, "people-counter"))
    assert events["north-stores selects site cam-east-10"] == [
        "cam-east-10: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group north-stores)",
        "cam-north-02: ~ model people-counter 1.1.0 -> 1.0.0 (downgrade, group all)"]
    assert events["cam-east-11.yml moves to site cam-east-10"] == [
        "cam-east-11: ~ model people-counter 1.0.0 -> 1.1.0 (upgrade, group north-stores)"]
    assert "cam-east-12.yaml moves to site cam-east-10" not in events
    shelf = dict(_events(work, "shelf-detector"))["initial fleet"]
    assert [line for line in shelf if line.startswith("cam-east-3")] == [
        "cam-east-30: + model shelf-detector 2.0.0 (group misnamed)"]
    assert "old/cam-east-13.yaml moves to site cam-east-10" not in events
