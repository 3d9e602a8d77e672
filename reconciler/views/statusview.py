"""``reconciler status``: one row per device, computed one status document at a time.

Rows stream in device order: only device names and commit ids are held for the whole fleet, each status
document is parsed, turned into a row and dropped.  Thousands of devices share a few applied commits, so
"behind N" is counted once per applied commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pygit2

from reconciler.errors import ReconcilerError
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FleetView
from reconciler.quantities import parse_duration
from reconciler.views import snapshot
from reconciler.views.fleetrepo import FleetRepo

DEFAULT_STALE_AFTER = 7 * 86400.0
PHASES = ("Ready", "Progressing", "Degraded", "Failed")
ERROR_LIMIT = 200


@dataclass(frozen=True)
class DeviceRow:
    device: str
    seen: bool  # has a status branch
    in_fleet: bool  # has a devices/ file on the fleet branch
    phase: str | None  # None when never seen
    applied: str | None
    convergence: str  # converged | behind N | unknown | not applied | never seen
    behind: int | None
    models: tuple[str, ...]
    last_seen: datetime | None
    age_seconds: float | None
    stale: bool
    last_error: str | None
    status_commit: str | None
    verified: str | None = None  # the device's Verified condition (trust): True | False | Unknown | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "phase": self.phase,
            "neverSeen": not self.seen,
            "inFleet": self.in_fleet,
            "appliedCommit": self.applied,
            "convergence": self.convergence,
            "behind": self.behind,
            "models": list(self.models),
            "lastSeen": _rfc3339(self.last_seen) if self.last_seen else None,
            "ageSeconds": None if self.age_seconds is None else round(self.age_seconds),
            "stale": self.stale,
            "lastError": self.last_error,
            "statusCommit": self.status_commit,
            "verified": self.verified,
        }


@dataclass
class Summary:
    phases: Counter[str] = field(default_factory=Counter)
    stale: int = 0
    behind: int = 0
    unknown: int = 0
    never_seen: int = 0
    total: int = 0
    unverified: int = 0  # devices whose Verified condition is False

    def add(self, row: DeviceRow) -> None:
        self.total += 1
        if not row.seen:
            self.never_seen += 1
            return
        self.phases[row.phase or "Unknown"] += 1
        self.stale += row.stale
        self.behind += row.behind is not None and row.behind > 0
        self.unknown += row.convergence == "unknown"
        self.unverified += row.verified == "False"

    def line(self) -> str:
        parts = [f"{self.total} devices:"]
        names = [*PHASES, *sorted(set(self.phases) - set(PHASES))]
        parts += [f"{self.phases[p]} {p}," for p in names if self.phases[p] or p in PHASES]
        parts += [f"{self.stale} stale, {self.behind} behind, {self.unknown} unknown, {self.never_seen} never seen"]
        if self.unverified:
            parts[-1] += f", {self.unverified} unverified (a commit not signed by an allowed signer)"
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "devices": self.total,
            "phases": {p: self.phases[p] for p in [*PHASES, *sorted(set(self.phases) - set(PHASES))]},
            "stale": self.stale,
            "behind": self.behind,
            "unknown": self.unknown,
            "neverSeen": self.never_seen,
            "unverified": self.unverified,
        }


class StatusView:
    """Rows of one fleet repository at its current fleet branch tip."""

    def __init__(self, fleet: FleetRepo, *, stale_after: float | None = None, now: datetime | None = None) -> None:
        self.fleet = fleet
        self.repo = fleet.repo
        self.main = fleet.main_tip()
        self.now = now or datetime.now(UTC)
        source = GitSource(self.repo, self.main, fleet.subdir)
        self.fleet_devices = set(source.names("devices"))
        self.stale_after = stale_after if stale_after is not None else self._configured_stale_after(source)
        self._behind: dict[str, int | None] = {}
        self._main_source = source
        self._sources: dict[str, GitSource | None] = {}
        self._tips = fleet.status_tips()
        self.devices = sorted(set(self._tips) | self.fleet_devices)
        self.summary = Summary()

    @staticmethod
    def _configured_stale_after(source: GitSource) -> float:
        doc = FleetView(source).fleet()
        value = ((doc.spec.get("status") or {}).get("staleAfter")) if doc is not None else None
        seconds = parse_duration(value) if value is not None else None
        return seconds if seconds is not None else DEFAULT_STALE_AFTER

    def rows(self) -> Iterator[DeviceRow]:
        """Each device's row, in name order; ``summary`` is complete once they are all consumed."""
        for device in self.devices:
            tip = self._tips.pop(device, None)
            row = self.row(device, tip)
            self.summary.add(row)
            yield row

    def row(self, device: str, tip: pygit2.Oid | None) -> DeviceRow:
        in_fleet = device in self.fleet_devices
        if tip is None:
            return DeviceRow(device, False, in_fleet, None, None, "never seen", None, (), None, None, False, None, None)
        commit = self.fleet.statuses[tip].peel(pygit2.Commit)
        snap = snapshot.read(self.fleet.statuses, commit, device)
        committed = datetime.fromtimestamp(commit.commit_time, UTC)
        # the device's own heartbeat time; the commit time (same clock) only when the file lacks it
        last_seen = snap.last_seen or committed
        age = (self.now - last_seen).total_seconds()
        behind = self.behind(snap.applied_commit)
        if behind and self._unaffected(device, str(snap.applied_commit)):
            # the agent commits status only when what runs changes: commits since then that touch nothing
            # this device reads (another device's file, docs) leave it converged
            behind = 0
        if snap.applied_commit is None:
            convergence = "not applied"
        elif behind is None:
            convergence = "unknown"
        else:
            convergence = "converged" if behind == 0 else f"behind {behind}"
        error = snap.last_error()
        if error and len(error) > ERROR_LIMIT:
            error = error[: ERROR_LIMIT - 1] + "…"
        return DeviceRow(
            device=device,
            seen=True,
            in_fleet=in_fleet,
            phase=snap.phase,
            applied=snap.applied_commit,
            convergence=convergence,
            behind=behind,
            models=tuple(m.label() for m in snap.models),
            last_seen=last_seen,
            age_seconds=age,
            stale=age > self.stale_after,
            last_error=error,
            status_commit=str(tip),
            verified=snap.verified,
        )

    def behind(self, applied: str | None) -> int | None:
        """Commits on the fleet branch after ``applied``; None when it is not in the branch's history."""
        if applied is None:
            return None
        if applied not in self._behind:
            self._behind[applied] = self._count_behind(applied)
        return self._behind[applied]

    def _unaffected(self, device: str, applied: str) -> bool:
        if applied not in self._sources:
            try:
                self._sources[applied] = GitSource(self.repo, applied, self.fleet.subdir)
            except ReconcilerError:
                self._sources[applied] = None
        source = self._sources[applied]
        return source is not None and source.relevant_key(device) == self._main_source.relevant_key(device)

    def _count_behind(self, applied: str) -> int | None:
        try:
            oid = self.repo.revparse_single(applied).peel(pygit2.Commit).id
            ahead, extra = self.repo.ahead_behind(self.main, oid)
        except (KeyError, ValueError, pygit2.GitError, pygit2.InvalidSpecError):
            return None
        # ``extra`` > 0: the applied commit has history main lacks (a rewritten or foreign branch)
        return int(ahead) if extra == 0 else None


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < -300:
        return "in future"  # the device's clock is ahead: worth a look
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
