"""Validate a whole fleet revision: every document, every device, every rule; all problems in one run."""

from __future__ import annotations

import difflib

from reconciler.errors import Problem
from reconciler.fleet.document import Document, Path_, capped
from reconciler.fleet.resolve import ALL, Resolver
from reconciler.fleet.rollouts import problems as rollout_problems
from reconciler.fleet.view import FleetView


def validate(view: FleetView) -> list[Problem]:
    view.fleet()
    resolver = Resolver(view, all_groups=True)
    devices = set(view.device_names())
    aliases = set(resolver.registries)
    if resolver.fleet is not None:
        _check_alias(resolver, resolver.fleet, ("spec", "defaults", "registry"), aliases)
    for name in view.group_names():
        gdoc = view.group(name)
        if gdoc is None:
            continue
        _check_alias(resolver, gdoc, ("spec", "config", "registry"), aliases)
        for i, member in enumerate(gdoc.spec.get("members") or []):
            if member not in devices:
                resolver.find(gdoc, ("spec", "members", i),
                              f"group {name!r} names device {member!r}, which has no file devices/{member}.yaml")
        for i in range(len(gdoc.spec.get("models") or [])):
            resolver.check_pin(gdoc, i)
    for name in view.model_names():
        mdoc = view.model(name)
        if mdoc is None:
            continue
        _check_alias(resolver, mdoc, ("spec", "registry"), aliases)
        alias = mdoc.spec.get("registry") or (resolver.defaults.get("registry"))
        for version, v in mdoc.spec["versions"].items():
            for field_name in ("artifact", "image"):
                if field_name in v:
                    ref, _ = resolver.expand(v[field_name], alias)
                    resolver.check_ref(mdoc, ("spec", "versions", version, field_name), v[field_name], ref)
            if not v.get("artifact") and not v.get("image"):
                resolver.find(mdoc, ("spec", "versions", version),
                              f"version {version!r} has neither artifact nor image: nothing to run")
    access_groups = {g for name in view.model_names() if (m := view.model(name)) is not None
                     for g in (m.spec.get("access") or {}).get("groups") or []}
    for name in sorted(devices):
        ddoc = view.device(name)
        if ddoc is None:
            continue
        _check_alias(resolver, ddoc, ("spec", "config", "registry"), aliases)
        _check_named_groups(resolver, view, ddoc, access_groups)
        resolver.resolve_one(name)
    rollouts = view.rollouts()
    found = rollout_problems(resolver.rollouts, rollouts, view.groups(),
                             {r.model: view.model(r.model) for r in resolver.rollouts.all}, devices)
    problems = {(p.file, p.line, p.column, p.message): p for p in view.problems() + resolver.problems() + found}
    ordered = sorted(problems.values(), key=lambda p: (p.file, p.line, p.column, p.message))
    return capped(ordered, view.limits.max_problems)


def _check_alias(resolver: Resolver, doc: Document, where: Path_, aliases: set[str]) -> None:
    node: object = doc.data
    for part in where:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, str) and node not in aliases:
        resolver.find(doc, where, f"unknown registry {node!r}: define it under fleet.yaml spec.registries"
                                  f" (defined: {', '.join(sorted(aliases)) or 'none'})")


def _check_named_groups(resolver: Resolver, view: FleetView, ddoc: Document, access_groups: set[str]) -> None:
    """Naming a group creates it, so a typo creates an empty group silently: a named group without a file that
    no model's access list names either changes nothing, and is a warning naming it (validate still exits 0)."""
    known = sorted({*view.group_names(), *access_groups})
    for i, group in enumerate(ddoc.spec.get("groups") or []):
        if group == ALL or group in access_groups or view.exists("Group", group):
            continue
        close = difflib.get_close_matches(group, known, n=1)
        hint = f": did you mean {close[0]!r}?" if close else ""
        resolver.find(ddoc, ("spec", "groups", i),
                      f"device file names group {group!r}, which has no file groups/{group}.yaml and no model's access "
                      f"list names: it gives the device nothing{hint}", severity="warning")
