"""The desired state of every device along a branch's history, each resolved once per class of devices that
resolve alike: what ``plan`` says between two commits, without resolving ten thousand devices twice per commit.

Resolving a device reads the fleet-wide documents (fleet.yaml, groups/, models/), the groups it belongs to, its
own file's labels and spec, and its name only where a model's access list names devices.  Devices equal in all
of those get equal desired states (up to the name, which ``compare`` does not print), so one of them is
resolved and the others share its result; across commits the result is reused as long as those inputs keep
their git ids.  Membership is memoized under the groups' members and selectors (not their pins), so a pin
change does not redo ten thousand membership tests.  It relies on the resolver's own rule that a group whose
bytes name neither a device nor its label values cannot hold it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any, cast

import pygit2

from reconciler.errors import InvalidConfig, NotFound
from reconciler.fleet.change import compare
from reconciler.fleet.document import Document
from reconciler.fleet.resolve import Resolver
from reconciler.fleet.source import YAML_SUFFIXES, GitSource
from reconciler.fleet.view import FLEET_FILE, FleetView, ParseCache
from reconciler.model import DesiredState

ABSENT = -1  # no device file at this commit
# a letter, then letters and digits in runs joined by '-': never a number, date, bool or null to YAML
_PLAIN_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+")
# (fleet.yaml, groups/, models/ and rollouts/ ids): what every device's resolution reads besides its own file
Shared = tuple[str | None, str | None, str | None, str | None]


def _frozen(value: Any) -> Hashable:
    """A hashable copy of parsed YAML that keeps types apart (1, 1.0 and true are different settings)."""
    if isinstance(value, dict):
        return ("map", tuple((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("seq", tuple(_frozen(v) for v in value))
    return (type(value).__name__, value)


class _Commit:
    """One commit's view and resolver, plus what is computed once per commit."""

    def __init__(self, repo: pygit2.Repository, commit: pygit2.Commit, subdir: str, cache: ParseCache) -> None:
        self.source = GitSource(repo, commit.id, subdir)
        self.view = FleetView(self.source, cache)
        self.resolver = Resolver(self.view)
        self.shared: Shared = (self.source.key(FLEET_FILE), self.source.tree_id("groups"),
                               self.source.tree_id("models"), self.source.tree_id("rollouts"))
        self._membership: int | None = None
        self._access: frozenset[str] | None = None

    def fleet_problems(self, head: str) -> None:
        problems = [p for p in self.view.problems() if p.file == FLEET_FILE]
        if problems:
            raise InvalidConfig(f"{FLEET_FILE} at {head} is invalid", problems)

    def blob(self, device: str) -> str | None:
        return self.source.key(f"devices/{device}.yaml") or self.source.key(f"devices/{device}.yml")

    def membership(self, ids: dict[Hashable, int]) -> int:
        """What decides which groups hold a device: every group's members and selector (numbered in ``ids``)."""
        if self._membership is None:
            key = tuple((name, _frozen(doc.spec.get("members")), _frozen(doc.spec.get("selector")))
                        for name, doc in sorted(self.view.groups().items()))
            self._membership = ids.setdefault(key, len(ids))
        return self._membership

    def access(self) -> frozenset[str]:
        """Devices named by a model's access list: their name changes what they may run."""
        if self._access is None:
            names: set[str] = set()
            for model in self.view.model_names():
                doc = self.view.model(model)
                access = doc.spec.get("access") if doc is not None else None
                if isinstance(access, dict):
                    names.update(str(d) for d in access.get("devices") or [])
            self._access = frozenset(names)
        return self._access


class FleetStates:
    """Desired states of many devices at many commits of one repository."""

    def __init__(self, repo: pygit2.Repository, subdir: str = "") -> None:
        self.repo = repo
        self.subdir = subdir.strip("/")
        self.cache = ParseCache()
        self.states: list[DesiredState | None] = []  # by result id; None: the device cannot be resolved
        self._results: dict[tuple[Shared, int, str | None], int] = {}
        self._profiles: dict[tuple[int, str, str], int] = {}  # (membership, device, blob) -> profile id
        self._memberships: dict[Hashable, int] = {}
        self._profile_ids: dict[Hashable, int] = {}
        # (device, blob) -> result, under the fleet-wide ids; a walk comes back only to the last few of those
        self._by_device: dict[Shared, dict[tuple[str, str], int]] = {}
        self._lines: dict[tuple[int, int], tuple[str, ...]] = {}
        self._commits: dict[pygit2.Oid, _Commit] = {}
        self._blob_maps: dict[str | None, dict[str, str]] = {}
        self._shapes: dict[bytes, Document] = {}  # device file bytes with its name cut out -> a parse of it

    def _at(self, commit: pygit2.Commit) -> _Commit:
        if commit.id not in self._commits:
            if len(self._commits) >= 2:  # the walk needs a commit and its parent at most
                self._commits.pop(next(iter(self._commits)))
            self._commits[commit.id] = _Commit(self.repo, commit, self.subdir, self.cache)
        return self._commits[commit.id]

    def _blobs(self, at: _Commit) -> dict[str, str]:
        """Every device at ``at`` and the id of its file, in one pass over devices/ (the names ``view.device_names``
        lists, with the file ``view.device`` reads: .yaml before .yml)."""
        tree_id = at.source.tree_id("devices")
        if tree_id not in self._blob_maps:
            if len(self._blob_maps) >= 4:
                self._blob_maps.pop(next(iter(self._blob_maps)))
            blobs: dict[str, str] = {}
            tree = cast(pygit2.Tree, self.repo[tree_id]) if tree_id is not None else ()
            for entry in tree:
                name = str(entry.name)
                if entry.type_str != "blob" or name.startswith(".") or not name.endswith(YAML_SUFFIXES):
                    continue
                device = name.rsplit(".", 1)[0]
                if name.endswith(".yaml"):
                    blobs[device] = str(entry.id)
                else:
                    blobs.setdefault(device, str(entry.id))
            self._blob_maps[tree_id] = blobs
        return self._blob_maps[tree_id]

    def _result(self, at: _Commit, device: str, blob: str | None) -> int:
        if blob is None:
            return ABSENT
        known = self._by_device.get(at.shared)
        if known is None:
            if len(self._by_device) >= 3:
                self._by_device.pop(next(iter(self._by_device)))
            known = self._by_device[at.shared] = {}
        found = known.get((device, blob))
        if found is None:
            found = known[(device, blob)] = self._resolve(at, device, blob)
        return found

    def _resolve(self, at: _Commit, device: str, blob: str) -> int:
        pkey = (at.membership(self._memberships), device, blob)
        profile = self._profiles.get(pkey)
        if profile is None:
            doc = self._doc(at, device, blob)
            content: Hashable = None  # a file that does not load resolves to nothing
            if doc is not None:
                content = (tuple(at.resolver.groups_of(device, doc)), _frozen(doc.labels), _frozen(doc.spec))
            profile = self._profiles[pkey] = self._profile_ids.setdefault(content, len(self._profile_ids))
        # an active rollout gives each device its own cohort: alike devices no longer resolve alike
        rkey = (at.shared, profile, device if device in at.access() or at.resolver.rollouts.active else None)
        result = self._results.get(rkey)
        if result is None:
            result = self._results[rkey] = len(self.states)
            self.states.append(at.resolver.resolve_one(device))
        return result

    def _doc(self, at: _Commit, device: str, blob: str) -> Document | None:
        """The device's parsed file.  A file equal to one parsed before but for the device's name (in
        metadata.name, and nowhere else) shares that parse: resolving reads its labels and spec, not the name.
        Only names that YAML reads as plain strings whatever they hold qualify."""
        name = device.encode()
        if len(device) > 63 or not _PLAIN_NAME.fullmatch(device):
            return at.view.device(device)
        raw: bytes = cast(pygit2.Blob, self.repo[blob]).data
        if raw.count(name) != 1:
            return at.view.device(device)
        shape = raw.replace(name, b"\0")
        doc = self._shapes.get(shape)
        if doc is None:
            doc = at.view.device(device)
            if doc is not None and doc.name == device:
                self._shapes[shape] = doc
        return doc

    def _change_lines(self, device: str, before: int, after: int) -> tuple[str, ...]:
        key = (before, after)
        if key not in self._lines:
            old = self.states[before] if before != ABSENT else None
            new = self.states[after] if after != ABSENT else None
            change = compare(device, old, new)
            self._lines[key] = change.lines if change is not None else ()
        return self._lines[key]

    def changes(self, base: pygit2.Commit, head: pygit2.Commit) -> list[tuple[str, tuple[str, ...]]]:
        """Each device whose desired state ``head`` changes, with ``plan``'s lines for it, by device name.
        Devices that cannot be resolved at ``head`` are left out (``plan`` lists them as invalid).  Raises
        InvalidConfig when fleet.yaml at ``head`` is invalid, NotFound when the fleet's directory is missing."""
        old, new = self._at(base), self._at(head)
        new.fleet_problems(str(head.id))
        reached = self._reached(base, head)
        old_blob: Callable[[str], str | None]
        new_blob: Callable[[str], str | None]
        if reached is None:
            old_blobs, new_blobs = self._blobs(old), self._blobs(new)
            devices = old_blobs.keys() | new_blobs.keys()
            old_blob, new_blob = old_blobs.get, new_blobs.get
        else:
            devices, old_blob, new_blob = reached, old.blob, new.blob
        out = []
        for device in sorted(devices):
            after = self._result(new, device, new_blob(device))
            if after != ABSENT and self.states[after] is None:
                continue
            lines = self._change_lines(device, self._result(old, device, old_blob(device)), after)
            if lines:
                out.append((device, lines))
        return out

    def initial(self, commit: pygit2.Commit) -> list[tuple[str, tuple[str, ...]]]:
        """At a root commit every device is new: each that resolves, with ``plan``'s lines for a new device."""
        try:
            at = self._at(commit)
        except NotFound:
            return []
        out = []
        for device, blob in sorted(self._blobs(at).items()):
            lines = self._change_lines(device, ABSENT, self._result(at, device, blob))
            if lines:
                out.append((device, lines))
        return out

    def _reached(self, base: pygit2.Commit, head: pygit2.Commit) -> set[str] | None:
        """Devices the changed paths can reach: None (every device) when a fleet-wide file changed, else the
        devices whose own files changed.  Every device costs little: those the change does not reach keep
        their results from before, so resolving them is a lookup."""
        prefix = f"{self.subdir}/" if self.subdir else ""
        devices: set[str] = set()
        for delta in base.tree.diff_to_tree(head.tree).deltas:
            for path in (delta.old_file.path, delta.new_file.path):
                if not path.startswith(prefix):
                    continue
                top, _, rest = path[len(prefix):].partition("/")
                if top == FLEET_FILE or (top in ("groups", "models", "rollouts") and rest):
                    return None
                name = rest.rsplit(".", 1)[0]
                # what the devices/ listing counts as a device: a .yaml/.yml file right in it, not hidden
                if top == "devices" and rest.endswith(YAML_SUFFIXES) and "/" not in name and not name.startswith("."):
                    devices.add(name)
        return devices
