"""Resolve the desired state of a device: groups, pinned models, detectors and layered config.

Findings that concern a device (conflicting pins, protected models, detectors, requirements) are collected per
location with the devices they affect, so that validating ten thousand devices gives one readable error per
cause rather than ten thousand copies.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.errors import InvalidConfig, NotFound, Problem
from reconciler.fleet.document import Document, Path_
from reconciler.fleet.rollouts import Rollout, RolloutBook
from reconciler.fleet.rules import DIGEST
from reconciler.fleet.view import FleetView
from reconciler.model import (
    DesiredState,
    Detector,
    HealthCheck,
    ModelAssignment,
    RegistryConfig,
    Resources,
    golden_from_dict,
)
from reconciler.quantities import parse_duration

ALL = "all"
_HOSTLIKE = re.compile(r"[.:]|^localhost$")
_REPLACED_WHOLE = {"storage"}  # a storage block names one driver: a higher layer replaces it, never mixes


DEFAULT_SETTINGS = {"heartbeatInterval": 3600.0, "staleAfter": 7 * 86400.0, "interval": 60.0, "jitter": 30.0,
                    "healthTimeout": 60.0}


def fleet_settings(spec: Mapping[str, Any]) -> dict[str, float]:
    """Fleet-wide timing in seconds, defaults filled in."""
    out = dict(DEFAULT_SETTINGS)
    for section in ("status", "agent"):
        for key, value in (spec.get(section) or {}).items():
            seconds = parse_duration(value)
            if seconds is not None:
                out[key] = seconds
    return out


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k not in _REPLACED_WHOLE:
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


class Resolver:
    """Resolves devices of one revision.  Group indexes are built once and shared by every device."""

    def __init__(self, view: FleetView, *, all_groups: bool = False) -> None:
        """With ``all_groups`` every group is loaded and indexed up front (validating or planning many devices);
        otherwise each device loads only the groups whose bytes can name it (rendering one device)."""
        self.view = view
        self.fleet = view.fleet()
        self.all_groups = all_groups
        self.groups: dict[str, Document] = dict(view.groups()) if all_groups else {}
        fleet_spec = self.fleet.spec if self.fleet else {}
        self.require_digests = bool((fleet_spec.get("policy") or {}).get("requireDigests", True))
        self.registries = {
            alias: RegistryConfig(alias, r["host"], r.get("port"), r.get("credentialsRef"),
                                  bool(r.get("skipTLSVerify", False)), bool(r.get("plainHTTP", False)), r.get("caFile"),
                                  tuple(r.get("mirrors") or ()))
            for alias, r in (fleet_spec.get("registries") or {}).items()
        }
        self.defaults: dict[str, Any] = dict(fleet_spec.get("defaults") or {})
        self.settings = fleet_settings(fleet_spec)
        self.rollouts = RolloutBook(view.rollouts().values())
        self._by_member: dict[str, list[str]] = defaultdict(list)
        self._by_label: dict[tuple[str, str], list[str]] = defaultdict(list)
        for name, g in self.groups.items():
            for member in g.spec.get("members") or []:
                self._by_member[member].append(name)
            match = (g.spec.get("selector") or {}).get("matchLabels") or {}
            if match:
                first = min(match.items())
                self._by_label[first].append(name)
        # (file, line, column, field, message with {devices}, severity) -> affected devices
        self.findings: dict[tuple[str, int, int, str, str, str], list[str]] = defaultdict(list)
        self._checked_refs: set[str] = set()

    # -- membership ----------------------------------------------------------------------------------------
    def groups_of(self, device: str, doc: Document) -> list[str]:
        if not self.all_groups:
            return self._groups_of_lazily(device, doc)
        names = {ALL, *self._by_member.get(device, ()), *(doc.spec.get("groups") or [])}
        labels = doc.labels
        for item in labels.items():
            for g in self._by_label.get(item, ()):
                match = self.groups[g].spec["selector"]["matchLabels"]
                if all(labels.get(k) == v for k, v in match.items()):
                    names.add(g)
        return sorted(names)

    def _groups_of_lazily(self, device: str, doc: Document) -> list[str]:
        # A group can hold a device only by naming it, by a selector whose values are its label values, or by
        # being named in the device's own file: a group file whose bytes contain none of those strings cannot
        # concern the device and is not parsed.  YAML escapes or aliases could hide a string: parse those.
        declared = {ALL, *(doc.spec.get("groups") or [])}
        labels = doc.labels
        needles = [device.encode(), *{v.encode() for v in labels.values()}]
        for name in self.view.group_names():
            if name in self.groups:
                continue
            raw = self.view.raw("groups", name) or b""
            if name in declared or b"\\" in raw or b"*" in raw or any(n in raw for n in needles):
                g = self.view.group(name)
                if g is not None:
                    self.groups[name] = g
        names = set(declared)
        for name, g in self.groups.items():
            match = (g.spec.get("selector") or {}).get("matchLabels") or {}
            if device in (g.spec.get("members") or []) or (match and all(labels.get(k) == v for k, v in match.items())):
                names.add(name)
        return sorted(names)

    def priority(self, group: str) -> int:
        g = self.groups.get(group)
        return int(g.spec.get("priority", 0)) if g else 0

    # -- resolution ----------------------------------------------------------------------------------------
    def resolve(self, device: str) -> DesiredState | None:
        """The desired state of ``device``; None when it cannot be resolved (findings say why)."""
        doc = self.view.device(device)
        if doc is None:
            return None
        groups = self.groups_of(device, doc)
        ordered = sorted(groups, key=lambda g: (-self.priority(g), g))  # highest priority first
        # fleet defaults < (a model version's own resources and env) < groups by priority < the device
        overrides: dict[str, Any] = {}
        for g in reversed(ordered):  # lowest first, so that higher priority overrides
            gdoc = self.groups.get(g)
            if gdoc is not None:
                overrides = merge(overrides, gdoc.spec.get("config") or {})
        overrides = merge(overrides, doc.spec.get("config") or {})
        config = merge(self.defaults, overrides)
        config.setdefault("runtime", "process")

        pins: dict[str, list[tuple[int, str, str, int]]] = defaultdict(list)
        for g in ordered:
            gdoc = self.groups.get(g)
            for i, pin in enumerate(gdoc.spec.get("models") or [] if gdoc else []):
                pins[pin["name"]].append((self.priority(g), g, pin["version"], i))
        models: list[ModelAssignment] = []
        ok = True
        for name in sorted(pins):
            candidates = pins[name]
            top = candidates[0][0]
            winners = [c for c in candidates if c[0] == top]
            if len({c[2] for c in winners}) > 1:
                ok = False
                first = winners[0]
                detail = ", ".join(f"{v!r} from group {g!r}" for _, g, v, _ in winners)
                self.find(self.groups[first[1]], ("spec", "models", first[3], "version"),
                           f"{{devices}} {{get}} model {name!r} at different versions from groups of equal priority "
                           f"{top}: {detail}; give one group a higher priority")
                continue
            _, group, version, index = winners[0]
            version, why = self._rollout_version(device, doc, group, name, version)
            assignment = self._assignment(device, doc, groups, group, index, name, version, config, overrides)
            if assignment is None:
                ok = False
                continue
            if why:
                assignment = dataclasses.replace(assignment, rollout=why, **self._pull_spread(device, doc, group, name,
                                                                                              winners[0][2]))
            models.append(assignment)

        detectors: list[Detector] = []
        seen: dict[str, str] = {}
        running = {m.name: m for m in models}
        for g in ordered:
            gdoc = self.groups.get(g)
            if gdoc is None:
                continue
            for i, det in enumerate(gdoc.spec.get("detectors") or []):
                did = det["detector_id"]
                if did in seen:
                    ok = False
                    self.find(gdoc, ("spec", "detectors", i, "detector_id"),
                               f"{{devices}} {{get}} detector {did!r} from groups {seen[did]!r} and {g!r}: "
                               "detector ids must be unique on a device")
                    continue
                seen[did] = g
                if det["model"] not in running and det["model"] not in pins:
                    ok = False
                    self.find(gdoc, ("spec", "detectors", i, "model"),
                               f"detector {did!r} is answered by model {det['model']!r}, which {{devices}} {{do}} not run")
                    continue
                detectors.append(Detector(
                    detector_id=did, model=det["model"], group=g,
                    confidence_threshold=float(det.get("confidence_threshold", 0.9)),
                    always_return_edge_prediction=bool(det.get("always_return_edge_prediction", False)),
                    disable_cloud_escalation=bool(det.get("disable_cloud_escalation", False)),
                    min_time_between_escalations=float(det.get("min_time_between_escalations", 2.0)),
                    local_inference_template=str(det.get("local_inference_template", "default")),
                ))
        ok = self._ports_unique(models) and ok
        if not ok:
            return None
        return DesiredState(device=device, labels=doc.labels, groups=tuple(groups), models=tuple(models),
                            detectors=tuple(detectors), config=config,
                            registries={m.registry: self.registries[m.registry] for m in models
                                        if m.registry is not None and m.registry in self.registries},
                            settings=self.settings)

    def _rollout_version(self, device: str, doc: Document, group: str, model: str,
                         pinned: str) -> tuple[str, str | None]:
        """The version an active rollout of the group's pin gives this device (fleet/rollouts.py)."""
        version, why = self.rollouts.version_for(device, doc.labels, group, model, pinned)
        mdoc = self.view.model(model) if version != pinned else None
        if mdoc is not None and version not in mdoc.spec["versions"]:
            return pinned, None  # validate names the unknown version
        return version, why

    def _pull_spread(self, device: str, doc: Document, group: str, model: str, pinned: str) -> dict[str, Any]:
        r = self.rollouts.concerning(group, model, pinned)
        fleet_spec = self.fleet.spec if self.fleet else {}
        rate = (r.max_pulls_per_minute if r else None) or ((fleet_spec.get("policy") or {}).get("rollout") or {}).get(
            "maxPullsPerMinute")
        if r is None or not rate:
            return {}
        gdoc = self.groups.get(group)
        spec = gdoc.spec if gdoc is not None else {}
        size = len(spec.get("members") or ()) if group != ALL and not spec.get("selector") else len(
            self.view.device_names())
        return {"pull_delay": r.pull_delay(device, doc.labels, size, int(rate)), "pull_origin": r.since}

    def winning_pin(self, groups: Iterable[str], model: str) -> tuple[str, str] | None:
        """(group, version) of ``model`` for a device in ``groups``: the highest priority pin, None when no
        group pins it or equal priorities disagree (the rule ``resolve`` applies, without resolving)."""
        pins = [(self.priority(g), g, p["version"]) for g in groups if (gd := self.groups.get(g)) is not None
                for p in gd.spec.get("models") or [] if p["name"] == model]
        if not pins:
            return None
        top = max(p[0] for p in pins)
        winners = {(g, v) for prio, g, v in pins if prio == top}
        return min(winners) if len({v for _, v in winners}) == 1 else None

    def cohort(self, r: Rollout, devices: Iterable[str]) -> list[tuple[str, int]]:
        """(device, the step it joined at) for each of ``devices`` in the current step's cohort of ``r``: in the
        rollout's group, which wins the device's pin of the model at ``from``, and in by hash or canary."""
        out = []
        for name in devices:
            doc = self.view.device(name)
            if doc is None:
                continue
            groups = self.groups_of(name, doc)
            if r.group not in groups or self.winning_pin(groups, r.model) != (r.group, r.from_version):
                continue
            joined = r.joined_at(name, doc.labels)
            if joined is not None:
                out.append((name, joined))
        return out

    def _ports_unique(self, models: list[ModelAssignment]) -> bool:
        """Two models of one device cannot listen on one port (after portOffset): an error naming both."""
        claimed: dict[int, ModelAssignment] = {}
        ok = True
        for m in models:
            if m.port is None:
                continue
            first = claimed.setdefault(m.port, m)
            if first is m:
                continue
            ok = False
            mdoc = self.view.model(m.name)
            if mdoc is not None:
                self.find(mdoc, ("spec", "versions", m.version, "port"),
                          f"{{devices}} {{get}} model {first.name!r} {first.version} (group {first.group!r}) and model "
                          f"{m.name!r} {m.version} (group {m.group!r}), which both claim port {m.port}")
        return ok

    def check_pin(self, gdoc: Document, index: int) -> Document | None:
        """The model document a group's pin names, if the model and version exist."""
        pin = gdoc.spec["models"][index]
        name, version = pin["name"], pin["version"]
        mdoc = self.view.model(name)
        if mdoc is None:
            if not self.view.is_broken("Model", name):
                self.find(gdoc, ("spec", "models", index, "name"),
                           f"unknown model {name!r}: there is no models/{name}.yaml")
            return None
        versions = mdoc.spec["versions"]
        if version not in versions:
            self.find(gdoc, ("spec", "models", index, "version"),
                       f"model {name!r} has no version {version!r} (known: {', '.join(sorted(versions))})")
            return None
        return mdoc

    def _assignment(self, device: str, doc: Document, groups: list[str], group: str, index: int,
                    name: str, version: str, config: Mapping[str, Any],
                    overrides: Mapping[str, Any]) -> ModelAssignment | None:
        gdoc = self.groups[group]
        mdoc = self.check_pin(gdoc, index)
        if mdoc is None:
            return None
        versions = mdoc.spec["versions"]
        access = mdoc.spec.get("access")
        if access is not None and device not in (access.get("devices") or []) and not (
            set(groups) & set(access.get("groups") or [])
        ):
            self.find(gdoc, ("spec", "models", index, "name"),
                       f"model {name!r} is protected: {{devices}} {{are}} not in its access list "
                       f"(models/{name}.yaml spec.access) but get it from group {group!r}")
            return None
        v = versions[version]
        alias = mdoc.spec.get("registry") or config.get("registry")
        refs: dict[str, str | None] = {}
        registry_used: str | None = None
        for field_name in ("artifact", "image"):
            raw = v.get(field_name)
            if raw is None:
                refs[field_name] = None
                continue
            ref, used = self.expand(raw, alias)
            registry_used = registry_used or used
            refs[field_name] = ref
            self.check_ref(mdoc, ("spec", "versions", version, field_name), raw, ref)
        if not self._requirements_met(mdoc, version, v.get("requirements") or {}, doc, config):
            return None
        health = v.get("health") or {}
        offset = int(config.get("portOffset", 0))
        port = v["port"] + offset if v.get("port") is not None else None
        health_port = health["port"] + offset if health.get("port") is not None else port
        command = tuple(a.replace("${MODEL_PORT}", str(port)) if port is not None else a for a in v.get("command") or ())
        res, env = ({**(self.defaults.get(key) or {}), **(v.get(key) or {}), **(overrides.get(key) or {})}
                    for key in ("resources", "env"))
        return ModelAssignment(
            name=name, version=version, group=group, artifact=refs["artifact"], image=refs["image"],
            command=command, env=tuple(sorted(env.items())), port=port,
            health=HealthCheck(path=health.get("path"), port=health_port,
                               timeout=float(health.get("timeout", self.settings["healthTimeout"])),
                               alive_seconds=float(health.get("aliveSeconds", 2.0)),
                               golden=golden_from_dict(health.get("golden"))),
            resources=Resources(cpus=res.get("cpus"), memory=res.get("memory"), gpus=res.get("gpus")),
            reload=v.get("reload", "restart"), registry=registry_used,
        )

    def expand(self, ref: str, default_alias: str | None) -> tuple[str, str | None]:
        """Expand a registry alias in ``ref``: ``repo/x@sha256:..`` -> ``host:port/x@sha256:..``."""
        first, sep, rest = ref.partition("/")
        if sep and first in self.registries:
            return f"{self.registries[first].address}/{rest}", first
        if sep and _HOSTLIKE.search(first):
            alias = next((a for a, r in self.registries.items() if r.address == first), None)
            return ref, alias
        if default_alias and default_alias in self.registries:
            return f"{self.registries[default_alias].address}/{ref}", default_alias
        return ref, None

    def check_ref(self, mdoc: Document, where: Path_, raw: str, ref: str) -> None:
        key = f"{mdoc.path}:{'.'.join(map(str, where))}"
        if key in self._checked_refs:
            return
        self._checked_refs.add(key)
        first = ref.partition("/")[0]
        if "/" not in ref or not _HOSTLIKE.search(first):
            self.find(mdoc, where, f"reference {raw!r} names no registry: start it with a registry name from "
                                    f"fleet.yaml spec.registries ({', '.join(sorted(self.registries)) or 'none defined'})"
                                    " or a host")
        if self.require_digests and not DIGEST.search(ref):
            self.find(mdoc, where, f"reference {raw!r} is not pinned by digest (@sha256:<64 hex>) and the fleet "
                                    "policy requires digests (fleet.yaml spec.policy.requireDigests)")

    def _requirements_met(self, mdoc: Document, version: str, req: Mapping[str, Any], doc: Document,
                          config: Mapping[str, Any]) -> bool:
        where: Path_ = ("spec", "versions", version, "requirements")
        labels = doc.labels
        ok = True
        runtimes = req.get("runtime")
        if runtimes and config.get("runtime") not in runtimes:
            ok = False
            self.find(mdoc, (*where, "runtime"),
                       f"version {version!r} needs runtime {' or '.join(runtimes)}; {{devices}} {{use}} "
                       f"{config.get('runtime')!r}")
        arch = req.get("arch")
        if arch and "arch" in labels and labels["arch"] not in arch:
            ok = False
            self.find(mdoc, (*where, "arch"),
                       f"version {version!r} runs on {', '.join(arch)}; {{devices}} {{are}} {labels['arch']!r} (label arch)")
        for k, v in (req.get("labels") or {}).items():
            if labels.get(k) != v:
                ok = False
                self.find(mdoc, (*where, "labels", k),
                           f"version {version!r} needs label {k}={v}; {{devices}} {{do}} not have it")
        return ok

    # -- findings ------------------------------------------------------------------------------------------
    def find(self, doc: Document, where: Path_, template: str, severity: str = "error") -> None:
        p = doc.problem(where, template)
        self.findings[(p.file, p.line, p.column, p.field, template, severity)].append(self._current)

    _current = ""

    def resolve_one(self, device: str) -> DesiredState | None:
        self._current = device
        return self.resolve(device)

    def problems(self) -> list[Problem]:
        out = []
        for (file, line, col, field_path, template, severity), devices in self.findings.items():
            out.append(Problem(file, line, col, fill(template, devices), field_path, severity))
        return out


def fill(template: str, devices: Iterable[str]) -> str:
    """Put the affected devices, and verbs agreeing with their number, into a finding's template."""
    names = sorted(set(n for n in devices if n))
    one = len(names) == 1
    verbs = {"{get}": "gets" if one else "get", "{do}": "does" if one else "do", "{are}": "is" if one else "are",
             "{use}": "uses" if one else "use"}
    text = template.replace("{devices}", _devices(names))
    for k, v in verbs.items():
        text = text.replace(k, v)
    return text


def _devices(names: Iterable[str]) -> str:
    unique = sorted(set(n for n in names if n))
    if not unique:
        return "devices"
    if len(unique) == 1:
        return f"device {unique[0]!r}"
    shown = ", ".join(repr(n) for n in unique[:5])
    more = f" and {len(unique) - 5} more" if len(unique) > 5 else ""
    return f"devices {shown}{more} ({len(unique)})"


def render_device(view: FleetView, device: str) -> DesiredState:
    """The desired state of ``device``, or InvalidConfig listing every problem that concerns it."""
    if view.device(device) is None and not view.exists("Device", device):
        known = view.device_names()
        hint = f" (known devices: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''})" if known else ""
        raise NotFound(f"unknown device {device!r}: there is no devices/{device}.yaml in {view.source.label}{hint}")
    resolver = Resolver(view)
    state = resolver.resolve_one(device)
    problems = [p for p in view.problems() + resolver.problems() if p.severity == "error"]
    if problems or state is None:
        raise InvalidConfig(f"the fleet at {view.source.label} is invalid for device {device!r}",
                            sorted(problems, key=lambda p: (p.file, p.line, p.column)))
    return state
