"""One ``status.yaml`` as read back from a status commit: the fields the views show, read leniently.

Views must show a device whose status file is damaged or written by an older agent, not stop on it: a field
of the wrong type reads as missing, and an unparsable file gives a snapshot whose ``problem`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pygit2
import yaml

from reconciler.fleet.document import Loader

STATUS_FILE = "status.yaml"


@dataclass(frozen=True)
class ModelSnapshot:
    name: str
    version: str
    state: str
    digest: str | None = None
    desired_version: str | None = None
    last_error: str | None = None
    group: str | None = None

    def label(self) -> str:
        """``name@version``, with the state when it is not plainly running."""
        text = f"{self.name}@{self.version}"
        if self.state == "rolledBack" and self.desired_version:
            return f"{text} (rolledBack from {self.desired_version})"
        if self.state not in ("running", ""):
            return f"{text} ({self.state})"
        return text


@dataclass(frozen=True)
class Snapshot:
    """What a device reported in one status commit."""

    device: str
    phase: str
    applied_commit: str | None
    observed_commit: str | None
    models: tuple[ModelSnapshot, ...]
    last_seen: datetime | None
    ready_error: str | None  # message of a Ready condition that is False
    push_error: str | None
    problem: str | None = None  # why the file could not be read, if it could not
    verified: str | None = None  # the Verified condition's status (devices with trust), None without one
    signed_by: str | None = None  # who signed the applied commit, as the device verified it

    def model(self, name: str) -> ModelSnapshot | None:
        return next((m for m in self.models if m.name == name), None)

    def last_error(self) -> str | None:
        """The first reason the device is not as desired: its Ready condition, else a model's error."""
        if self.problem:
            return self.problem
        if self.ready_error:
            return self.ready_error
        return next((f"{m.name}: {m.last_error}" for m in self.models if m.last_error), None)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time (``...Z`` or with an offset) as an aware UTC datetime; None when malformed."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def from_bytes(device: str, data: bytes) -> Snapshot:
    try:
        doc = yaml.load(data, Loader=Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return _broken(device, f"{STATUS_FILE} is not valid YAML{where}")
    if not isinstance(doc, dict):
        return _broken(device, f"{STATUS_FILE} is not a mapping")
    models = []
    for item in doc.get("models") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            models.append(ModelSnapshot(
                name=item["name"],
                version=str(item.get("version", "?")),
                state=_str(item.get("state")) or "",
                digest=_str(item.get("digest")),
                desired_version=_str(item.get("desiredVersion")),
                last_error=_str(item.get("lastError")),
                group=_str(item.get("group")),
            ))
    ready_error = verified = None
    for cond in doc.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready" and cond.get("status") == "False":
            ready_error = _str(cond.get("message")) or _str(cond.get("reason"))
        if isinstance(cond, dict) and cond.get("type") == "Verified":
            verified = _str(cond.get("status"))
    push = doc.get("push")
    if not isinstance(push, dict):
        push = {}
    return Snapshot(
        device=_str(doc.get("device")) or device,
        phase=_str(doc.get("phase")) or "Unknown",
        applied_commit=_str(doc.get("appliedCommit")),
        observed_commit=_str(doc.get("observedCommit")),
        models=tuple(models),
        last_seen=parse_time(doc.get("lastSeen")),
        ready_error=ready_error,
        push_error=_str(push.get("lastError")),
        verified=verified,
        signed_by=_str(doc.get("signedBy")),
    )


def _broken(device: str, problem: str) -> Snapshot:
    return Snapshot(device, "Unknown", None, None, (), None, None, None, problem)


def status_blob(repo: pygit2.Repository, commit: pygit2.Commit) -> bytes | None:
    """The bytes of ``status.yaml`` in a status commit, or None when it holds no such file."""
    try:
        entry = commit.tree[STATUS_FILE]
    except KeyError:
        return None
    obj = repo[entry.id]
    return obj.data if isinstance(obj, pygit2.Blob) else None


def read(repo: pygit2.Repository, commit: pygit2.Commit, device: str) -> Snapshot:
    data = status_blob(repo, commit)
    if data is None:
        return _broken(device, f"status commit {commit.short_id} has no {STATUS_FILE}")
    return from_bytes(device, data)
