"""Maintenance windows: when a device may switch what runs (config ``activation.windows``).

A window opens on each of its ``days`` at ``start`` and closes at ``end`` in its IANA time zone; an end at or
before the start runs past midnight into the next day.  Without windows a device switches at once.  Outside
every window ``gate`` holds the actions that would interrupt a running workload (a version or spec switch, a
restart for new detectors); artifacts are still pulled, workloads that are not running still start, drift is
still repaired, and a failed new version is still rolled back (the rollback is part of the switch).

Pure: the clock is an argument.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from reconciler.errors import InvalidConfig
from reconciler.fleet.rules import zone_exists

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
HELD = ("replace", "restart")


class Switch(Protocol):
    """What ``gate`` reads of an action (the agent's ``plan.Action``)."""

    @property
    def kind(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def reason(self) -> str: ...


A = TypeVar("A", bound=Switch)


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int
    zone: str = "UTC"

    def opening(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        tz = ZoneInfo(self.zone)
        opens = dt.datetime.combine(day, dt.time(self.start // 60, self.start % 60), tzinfo=tz)
        end_day = day + dt.timedelta(days=1) if self.end <= self.start else day
        closes = dt.datetime.combine(end_day, dt.time(0), tzinfo=tz) + dt.timedelta(minutes=self.end)
        return opens, closes


def _minutes(text: str) -> int:
    hours, _, minutes = text.partition(":")
    return int(hours) * 60 + int(minutes)


def windows(config: Mapping[str, Any]) -> tuple[Window, ...]:
    out = []
    for w in (config.get("activation") or {}).get("windows") or ():
        zone = str(w.get("timezone", "UTC"))
        if not zone_exists(zone):
            raise InvalidConfig(f"activation.windows: unknown time zone {zone!r}")
        days = frozenset(DAYS.index(d) for d in w.get("days") or DAYS)
        out.append(Window(days, _minutes(w["start"]), _minutes(w["end"]), zone))
    return tuple(out)


def is_open(ws: Sequence[Window], now: dt.datetime) -> bool:
    if not ws:
        return True
    for w in ws:
        local = now.astimezone(ZoneInfo(w.zone)).date()
        for day in (local - dt.timedelta(days=1), local):
            opens, closes = w.opening(day)
            if day.weekday() in w.days and opens <= now < closes:
                return True
    return False


def next_open(ws: Sequence[Window], now: dt.datetime) -> dt.datetime | None:
    """When the next window opens after ``now`` (None without windows)."""
    found: list[dt.datetime] = []
    for w in ws:
        local = now.astimezone(ZoneInfo(w.zone)).date()
        for offset in range(8):
            day = local + dt.timedelta(days=offset)
            opens, _ = w.opening(day)
            if day.weekday() in w.days and opens > now:
                found.append(opens)
                break
    return min(found, default=None)


def gate(actions: Sequence[A], config: Mapping[str, Any], now: dt.datetime) -> tuple[list[A], list[A], str]:
    """(actions to carry out, actions held, why) for the device's windows at ``now``."""
    ws = windows(config)
    held = [a for a in actions if a.kind in HELD]
    if not held or is_open(ws, now):
        return list(actions), [], ""
    when = next_open(ws, now)
    switches = ", ".join(f"{a.model} {'restart' if a.kind == 'restart' else a.reason}" for a in held)
    at = when.isoformat() if when is not None else "never"
    return ([a for a in actions if a.kind not in HELD], held,
            f"Waiting: next window {at}; held until then: {switches}")
