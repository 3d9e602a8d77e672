"""What a change to the fleet repository does to each device: the pure heart of ``reconciler plan``.

The git tree diff between the two revisions names the files that changed; only devices those files can reach
are resolved (a changed group reaches its members at either revision), so a one-group change does not load
every device file of both revisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pygit2

from reconciler.errors import InvalidConfig, Problem
from reconciler.fleet.resolve import ALL, Resolver, fill
from reconciler.fleet.rollouts import Rollout
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FLEET_FILE, FleetView, ParseCache
from reconciler.model import DesiredState


@dataclass(frozen=True)
class DeviceChange:
    device: str
    status: str  # added | removed | changed | invalid
    lines: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    base: str
    head: str
    changed_paths: tuple[str, ...]
    devices: tuple[DeviceChange, ...]
    problems: tuple[Problem, ...] = ()
    rollouts: tuple[str, ...] = ()  # one line per rollout the change adds or moves: cohort sizes


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 1.10 > 1.9, 2.0.0 > 2.0.0-rc1 is not attempted (strings compare after numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[A-Za-z]+", version))


class _Revision:
    def __init__(self, source: GitSource, cache: ParseCache, raw: dict[str, bytes]) -> None:
        self.source = source
        self.view = FleetView(source, cache)
        self.resolver = Resolver(self.view)
        self.raw = raw  # device blob bytes by blob id, shared by both revisions
        self._device_set: set[str] | None = None

    def devices(self) -> list[str]:
        return self.view.device_names()

    def device_set(self) -> set[str]:
        if self._device_set is None:
            self._device_set = set(self.devices())
        return self._device_set

    def _device_bytes(self) -> list[tuple[str, bytes]]:
        out = []
        for name in self.devices():
            key = self.source.key(f"devices/{name}.yaml") or self.source.key(f"devices/{name}.yml")
            if key is None:
                continue
            if key not in self.raw:
                self.raw[key] = self.source.read(f"devices/{name}.yaml") or self.source.read(f"devices/{name}.yml") or b""
            out.append((name, self.raw[key]))
        return out

    def members(self, group: str) -> set[str]:
        """Devices in ``group`` at this revision, reading only device files that may name or match it."""
        if group == ALL:
            return set(self.devices())
        gdoc = self.view.group(group)
        out = set(gdoc.spec.get("members") or []) if gdoc else set()
        match = ((gdoc.spec.get("selector") or {}).get("matchLabels") or {}) if gdoc else {}
        needles = [group.encode()] + ([v.encode() for v in match.values()] if match else [])
        for name, raw in self._device_bytes():
            if not any(n in raw for n in needles):
                continue
            ddoc = self.view.device(name)
            if ddoc is not None and group in self.resolver.groups_of(name, ddoc):
                out.add(name)
        return out & self.device_set()

    def users_of_model(self, model: str) -> set[str]:
        out: set[str] = set()
        for name, gdoc in self.view.groups().items():
            if any(p["name"] == model for p in gdoc.spec.get("models") or []):
                out |= self.members(name)
        return out

    def state(self, device: str) -> tuple[DesiredState | None, list[Problem]]:
        if device not in self.device_set():
            return None, []
        before = set(self.resolver.findings)
        state = self.resolver.resolve_one(device)
        if state is None or self.view.device(device) is None:
            problems = [p for p in self.view.problems() if p.file.startswith(f"devices/{device}.")]
            for key in set(self.resolver.findings) - before:
                problems.append(Problem(key[0], key[1], key[2], fill(key[4], [device]), key[3]))
            return None, problems or [Problem(f"devices/{device}.yaml", 1, 1, "cannot be resolved")]
        return state, []


def plan(repo: pygit2.Repository, base: str, head: str, subdir: str = "") -> Plan:
    cache = ParseCache()
    raw: dict[str, bytes] = {}
    old = _Revision(GitSource(repo, base, subdir), cache, raw)
    new = _Revision(GitSource(repo, head, subdir), cache, raw)
    prefix = f"{subdir.strip('/')}/" if subdir.strip("/") else ""
    paths: set[str] = set()
    for delta in old.source.root_tree.diff_to_tree(new.source.root_tree).deltas:
        for p in (delta.old_file.path, delta.new_file.path):
            if p.startswith(prefix):
                paths.add(p[len(prefix):])
    shared = [p for p in new.view.problems() if p.file == FLEET_FILE]
    if shared:
        raise InvalidConfig(f"{FLEET_FILE} at {head} is invalid", shared)

    devices: set[str] = set()
    for path in sorted(paths):
        top, _, rest = path.partition("/")
        name = rest.rsplit(".", 1)[0]
        if path == FLEET_FILE:
            devices |= set(old.devices()) | set(new.devices())
        elif top == "devices" and rest:
            devices.add(name)
        elif top == "groups" and rest:
            devices |= old.members(name) | new.members(name)
        elif top == "models" and rest:
            devices |= old.users_of_model(name) | new.users_of_model(name)
        elif top == "rollouts" and rest:
            for side in (old, new):
                doc = side.view.rollout(name)
                if doc is not None:
                    devices |= side.members(doc.spec["group"])

    changes = []
    problems: list[Problem] = []
    for device in sorted(devices):
        before, _ = old.state(device)
        after, errs = new.state(device)
        if errs:
            problems += errs
            changes.append(DeviceChange(device, "invalid", tuple(p.format() for p in errs)))
            continue
        change = compare(device, before, after)
        if change is not None:
            changes.append(change)
    lines = tuple(line for path in sorted(paths) if path.startswith("rollouts/")
                  for line in _rollout_lines(old, new, path.partition("/")[2].rsplit(".", 1)[0]))
    return Plan(base, head, tuple(sorted(paths)), tuple(changes), tuple(problems), lines)


def _rollout_lines(old: _Revision, new: _Revision, name: str) -> list[str]:
    """``rollout NAME: step 2/3 (50%), Progressing: cohort 10 of 20 devices of group g (was 1)``."""
    doc, before = new.view.rollout(name), old.view.rollout(name)
    if doc is None:
        return [f"rollout {name}: removed"] if before is not None else []
    r = Rollout.from_document(doc)
    group = new.members(r.group)
    size = len(new.resolver.cohort(r, sorted(group))) if r.active else 0
    was = ""
    if before is not None:
        b = Rollout.from_document(before)
        was = f" (was {len(old.resolver.cohort(b, sorted(old.members(b.group)))) if b.active else 0}, {b.where()} {b.phase})"
    return [f"rollout {name}: {r.model} {r.from_version} -> {r.to_version}, {r.where()}, {r.phase}: cohort {size} "
            f"of {len(group)} devices of group {r.group}{was}"]


def compare(device: str, before: DesiredState | None, after: DesiredState | None) -> DeviceChange | None:
    if before is None and after is None:
        return None
    if before is None:
        assert after is not None
        added = ["new device"] + [f"+ model {m.name} {m.version} (group {m.group})" for m in after.models]
        return DeviceChange(device, "added", tuple(added), {"after": after.to_dict()})
    if after is None:
        removed = ["device removed"] + [f"- model {m.name} {m.version}" for m in before.models]
        return DeviceChange(device, "removed", tuple(removed), {"before": before.to_dict()})
    lines: list[str] = []
    details: dict[str, Any] = {"models": [], "detectors": [], "config": [], "groups": {}}
    added_groups = sorted(set(after.groups) - set(before.groups))
    removed_groups = sorted(set(before.groups) - set(after.groups))
    if added_groups or removed_groups:
        details["groups"] = {"added": added_groups, "removed": removed_groups}
        lines += [f"+ group {g}" for g in added_groups] + [f"- group {g}" for g in removed_groups]
    old_models = {m.name: m for m in before.models}
    new_models = {m.name: m for m in after.models}
    for name in sorted(set(old_models) | set(new_models)):
        a, b = old_models.get(name), new_models.get(name)
        if a is None and b is not None:
            lines.append(f"+ model {name} {b.version} (group {b.group})")
            details["models"].append({"model": name, "change": "added", "version": b.version, "group": b.group})
        elif b is None and a is not None:
            lines.append(f"- model {name} {a.version}")
            details["models"].append({"model": name, "change": "removed", "version": a.version})
        elif a is not None and b is not None and a != b:
            if a.version != b.version:
                direction = "upgrade" if version_key(b.version) > version_key(a.version) else "downgrade"
                lines.append(f"~ model {name} {a.version} -> {b.version} ({direction}, group {b.group})")
                details["models"].append({"model": name, "change": direction, "from": a.version,
                                          "to": b.version, "group": b.group})
            else:
                what = sorted(k for k, v in b.to_dict().items() if a.to_dict().get(k) != v)
                lines.append(f"~ model {name} {b.version}: {', '.join(what)} changed")
                details["models"].append({"model": name, "change": "spec", "version": b.version, "fields": what})
    old_det = {d.detector_id: d.to_dict() for d in before.detectors}
    new_det = {d.detector_id: d.to_dict() for d in after.detectors}
    for did in sorted(set(old_det) | set(new_det)):
        a2, b2 = old_det.get(did), new_det.get(did)
        if a2 is None:
            lines.append(f"+ detector {did} (model {new_det[did]['model']})")
            details["detectors"].append({"detector": did, "change": "added"})
        elif b2 is None:
            lines.append(f"- detector {did}")
            details["detectors"].append({"detector": did, "change": "removed"})
        elif a2 != b2:
            diffs = [f"{k} {a2.get(k)} -> {b2.get(k)}" for k in sorted(b2) if a2.get(k) != b2.get(k)]
            lines.append(f"~ detector {did}: {'; '.join(diffs)}")
            details["detectors"].append({"detector": did, "change": "changed", "fields": diffs})
    for key, a3, b3 in _flat_diff(dict(before.config), dict(after.config)):
        lines.append(f"~ config {key}: {_show(a3)} -> {_show(b3)}")
        details["config"].append({"key": key, "from": a3, "to": b3})
    if not lines:
        return None
    return DeviceChange(device, "changed", tuple(lines), details)


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _flat_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        return out
    return [] if a == b else [(prefix, a, b)]


def _show(value: Any) -> str:
    return "(unset)" if value is None else str(value)
