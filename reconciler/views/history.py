"""``reconciler history``: what a device (or every device running a model) was asked to run, by whom, and
what it actually ran, as one timeline.

Desired changes come from the fleet branch's first-parent chain (each commit as it landed on main, a merge
counted as the change it brought).  A commit can change what a device runs only if it touched fleet.yaml,
groups/, models/, rollouts/ or that device's file, so the others are skipped by comparing tree entry ids, and each
distinct set of those entries is resolved once; a model's history resolves each class of devices that resolve
alike once (``fleetstates``), not every device at every commit.  Observed changes come from the status branch chains: a
status commit counts when the phase, the applied fleet commit or a model's version, state or digest changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pygit2

from reconciler.errors import InvalidConfig, NotFound
from reconciler.fleet.change import compare
from reconciler.fleet.resolve import Resolver
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FLEET_FILE, FleetView, ParseCache
from reconciler.model import DesiredState
from reconciler.views import snapshot
from reconciler.views.fleetrepo import FleetRepo
from reconciler.views.fleetstates import FleetStates
from reconciler.views.snapshot import ModelSnapshot, Snapshot

DESIRED = "desired"
OBSERVED = "observed"


@dataclass(frozen=True)
class Event:
    time: datetime
    kind: str  # desired | observed
    commit: str  # the fleet commit (desired) or the status commit (observed)
    who: str  # "Name <email>" of the author; the device for observed events
    message: str  # first line of the commit message
    lines: tuple[str, ...]  # what changed, one human line each
    device: str | None = None  # observed: whose status branch
    applied: str | None = None  # observed: the fleet commit the device had applied
    signed_by: str | None = None  # observed: who signed that commit, as the device verified it (trust)

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": _rfc3339(self.time),
            "kind": self.kind,
            "commit": self.commit,
            "who": self.who,
            "message": self.message,
            "device": self.device,
            "appliedCommit": self.applied,
            "signedBy": self.signed_by,
            "changes": list(self.lines),
        }


def timeline(fleet: FleetRepo, *, device: str | None = None, model: str | None = None,
             since: datetime | None = None) -> list[Event]:
    """Desired and observed events of ``device`` (or of ``model`` on every device), oldest first."""
    if (device is None) == (model is None):
        raise ValueError("timeline needs exactly one of device and model")
    if device is not None:
        events = [*desired_for_device(fleet, device, since), *observed(fleet, device, None, since)]
    else:
        assert model is not None
        events = [*desired_for_model(fleet, model, since)]
        for name in sorted(fleet.status_tips()):
            events += observed(fleet, name, model, since)
    # at equal times the request comes before the report of it
    return sorted(events, key=lambda e: (e.time, e.kind != DESIRED))


# -- desired ---------------------------------------------------------------------------------------------------
def _first_parent_chain(repo: pygit2.Repository, tip: pygit2.Oid, since: datetime | None) -> list[pygit2.Commit]:
    """Commits of the branch as it moved (first parents), oldest first, back to ``since``."""
    chain = []
    commit: pygit2.Commit | None = repo[tip].peel(pygit2.Commit)
    limit = since.timestamp() if since else None
    while commit is not None:
        if limit is not None and commit.commit_time < limit:
            break
        chain.append(commit)
        commit = commit.parents[0] if commit.parent_ids else None
    chain.reverse()
    return chain


class _TreeIndex:
    """Entry ids by path, memoized per tree id.  Consecutive commits share most trees, and a 10,000-entry
    devices/ tree costs a parse per lookup in libgit2, so each distinct tree is read once."""

    def __init__(self, repo: pygit2.Repository) -> None:
        self.repo = repo
        self._memo: dict[tuple[pygit2.Oid, str], pygit2.Oid | None] = {}
        self._last: tuple[pygit2.Oid | None, pygit2.Tree | None] = (None, None)

    def _tree(self, oid: pygit2.Oid) -> pygit2.Tree | None:
        if self._last[0] != oid:
            obj = self.repo[oid]
            self._last = (oid, obj if isinstance(obj, pygit2.Tree) else None)
        return self._last[1]

    def entry_id(self, commit: pygit2.Commit, path: str) -> str | None:
        oid: pygit2.Oid | None = commit.tree_id
        for part in path.split("/"):
            if oid is None:
                return None
            key = (oid, part)
            if key not in self._memo:
                tree = self._tree(oid)
                entry = None
                if tree is not None:
                    try:
                        entry = tree[part]
                    except KeyError:
                        entry = None
                self._memo[key] = entry.id if entry is not None else None
            oid = self._memo[key]
        return str(oid) if oid is not None else None

    def key(self, commit: pygit2.Commit, paths: tuple[str, ...]) -> tuple[str | None, ...]:
        return tuple(self.entry_id(commit, p) for p in paths)


def _prefixed(fleet: FleetRepo, *paths: str) -> tuple[str, ...]:
    return tuple(f"{fleet.subdir}/{p}" if fleet.subdir else p for p in paths)


def _author(commit: pygit2.Commit) -> str:
    return f"{commit.author.name} <{commit.author.email}>"


def _first_line(commit: pygit2.Commit) -> str:
    return (commit.message.strip().splitlines() or [""])[0]


def _time(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class _Resolved:
    state: DesiredState | None
    problem: str | None  # the device file exists but its desired state is invalid


class _DeviceResolver:
    """The desired state of one device at any commit, resolved once per distinct set of relevant files."""

    def __init__(self, fleet: FleetRepo, device: str) -> None:
        self.fleet = fleet
        self.device = device
        self.paths = _prefixed(fleet, FLEET_FILE, "groups", "models", f"devices/{device}.yaml",
                               f"devices/{device}.yml", "rollouts")
        self.cache = ParseCache()
        self.index = _TreeIndex(fleet.repo)
        self._by_key: dict[tuple[str | None, ...], _Resolved] = {}

    def key(self, commit: pygit2.Commit) -> tuple[str | None, ...]:
        return self.index.key(commit, self.paths)

    def at(self, commit: pygit2.Commit, key: tuple[str | None, ...] | None = None) -> _Resolved:
        key = key or self.key(commit)
        if key not in self._by_key:
            self._by_key[key] = self._resolve(commit) if key[3] or key[4] else _Resolved(None, None)
        return self._by_key[key]

    def _resolve(self, commit: pygit2.Commit) -> _Resolved:
        try:
            view = FleetView(GitSource(self.fleet.repo, commit.id, self.fleet.subdir), self.cache)
        except NotFound:
            return _Resolved(None, None)
        resolver = Resolver(view)
        state = resolver.resolve_one(self.device)
        if state is not None:
            return _Resolved(state, None)
        problems = [p for p in [*view.problems(), *resolver.problems()] if p.severity == "error"]
        return _Resolved(None, problems[0].format() if problems else "cannot be resolved")


def desired_for_device(fleet: FleetRepo, device: str, since: datetime | None = None) -> Iterator[Event]:
    repo = fleet.repo
    resolver = _DeviceResolver(fleet, device)
    good: DesiredState | None = None  # the last valid state: what the device keeps running through an invalid one
    previous_key: tuple[str | None, ...] | None = None  # the parent's, i.e. the previous commit's in the chain
    for commit in _first_parent_chain(repo, fleet.main_tip(), since):
        key = resolver.key(commit)
        if previous_key is None and commit.parent_ids:
            good = resolver.at(commit.parents[0]).state
        elif key == previous_key:
            continue
        previous_key = key
        now = resolver.at(commit, key)
        lines: tuple[str, ...] = ()
        if now.problem is not None:
            lines = (f"! desired state invalid, the device keeps its last good state: {now.problem}",)
        else:
            change = compare(device, good, now.state)
            good = now.state
            lines = change.lines if change is not None else ()
        if lines:
            yield Event(_time(commit.commit_time), DESIRED, str(commit.id), _author(commit), _first_line(commit), lines)


def desired_for_model(fleet: FleetRepo, model: str, since: datetime | None = None) -> Iterator[Event]:
    """Commits that changed which devices run ``model``, or which version, with the devices' lines."""
    repo = fleet.repo
    paths = _prefixed(fleet, FLEET_FILE, "groups", f"models/{model}.yaml", f"models/{model}.yml", "devices",
                      "rollouts")
    mentions = re.compile(rf"^[+~-] model {re.escape(model)}[ :]")
    index = _TreeIndex(repo)
    states = FleetStates(repo, fleet.subdir)
    for commit in _first_parent_chain(repo, fleet.main_tip(), since):
        if commit.parent_ids:
            parent = commit.parents[0]
            if index.key(commit, paths) == index.key(parent, paths):
                continue
            try:
                per_device = states.changes(parent, commit)
            except InvalidConfig as exc:
                yield Event(_time(commit.commit_time), DESIRED, str(commit.id), _author(commit), _first_line(commit),
                            (f"! fleet invalid at this commit: {exc.summary}",))
                continue
            except NotFound:
                continue
        else:
            per_device = states.initial(commit)
        lines = tuple(f"{dev}: {line}" for dev, dev_lines in per_device for line in dev_lines if mentions.match(line))
        if lines:
            yield Event(_time(commit.commit_time), DESIRED, str(commit.id), _author(commit), _first_line(commit), lines)


# -- observed --------------------------------------------------------------------------------------------------
def observed(fleet: FleetRepo, device: str, model: str | None = None,
             since: datetime | None = None) -> Iterator[Event]:
    """Status commits of ``device`` that changed what it ran (only ``model``'s lines when given)."""
    repo = fleet.statuses
    tip = fleet.status_tip(device)
    if tip is None:
        return
    chain = _first_parent_chain(repo, tip, since)
    if chain and chain[0].parent_ids:
        chain.insert(0, chain[0].parents[0])  # the report before ``since``: the baseline, not an event
    limit = since.timestamp() if since else None
    needle = model.encode() if model is not None else None
    prev: Snapshot | None = None
    for commit in chain:
        data = snapshot.status_blob(repo, commit)
        if data is None:
            continue
        if needle is not None and needle not in data:
            # the model is not in this report: compare as if it listed nothing, without parsing it
            cur = Snapshot(device, "", None, None, (), None, None, None)
        else:
            cur = snapshot.from_bytes(device, data)
        lines = changes(prev, cur, model)
        prev = cur
        when = commit.author.time
        if lines and (limit is None or when >= limit):
            yield Event(_time(when), OBSERVED, str(commit.id), device, _first_line(commit), tuple(lines),
                        device=device, applied=cur.applied_commit, signed_by=cur.signed_by)


def changes(prev: Snapshot | None, cur: Snapshot, model: str | None = None) -> list[str]:
    """What a status report says that the previous one did not, one line each."""
    lines: list[str] = []
    if model is None:
        if cur.problem:
            return [f"! {cur.problem}"] if prev is None or prev.problem != cur.problem else []
        if prev is None:
            lines.append(f"phase {cur.phase} (first report)")
        elif prev.phase != cur.phase:
            lines.append(f"phase {prev.phase} -> {cur.phase}")
        if cur.applied_commit and (prev is None or prev.applied_commit != cur.applied_commit):
            lines.append(f"applied fleet commit {cur.applied_commit[:12]}")
    before = {m.name: m for m in prev.models} if prev else {}
    after = {m.name: m for m in cur.models}
    names = [model] if model is not None else sorted(set(before) | set(after))
    for name in names:
        line = _model_change(before.get(name), after.get(name))
        if line:
            lines.append(line)
    return lines


def _model_change(a: ModelSnapshot | None, b: ModelSnapshot | None) -> str | None:
    if b is None:
        return None if a is None else f"- model {a.name} {a.version} no longer runs"
    tail = _state_text(b)
    if a is None:
        return f"+ model {b.name} {b.version} {tail}"
    if a.version != b.version:
        return f"~ model {b.name} {a.version} -> {b.version} {tail}"
    if a.state != b.state:
        return f"~ model {b.name} {b.version} {a.state} -> {tail}"
    if a.digest != b.digest:
        return f"~ model {b.name} {b.version} digest {_short(a.digest)} -> {_short(b.digest)}"
    return None


def _state_text(m: ModelSnapshot) -> str:
    text = m.state or "reported"
    if m.digest:
        text += f" ({_short(m.digest)})"
    if m.state == "rolledBack" and m.desired_version:
        text += f", wanted {m.desired_version}"
    if m.last_error and m.state in ("failed", "rolledBack"):
        text += f": {m.last_error}"
    return text


def _short(digest: str | None) -> str:
    if not digest:
        return "none"
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
