"""Maintenance windows (pure): open or not at a given instant, the next opening, and what the gate holds."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from reconciler.agent.plan import Action
from reconciler.errors import InvalidConfig
from reconciler.rollout.windows import gate, is_open, next_open, windows

BERLIN_NIGHTS = {"activation": {"windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00",
                                             "end": "04:00", "timezone": "Europe/Berlin"}]}}


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)


@pytest.mark.parametrize(("when", "open_"), [
    ("2026-12-01T20:59:00", False),  # Tue 21:59 Berlin
    ("2026-12-01T21:00:00", True),   # Tue 22:00 Berlin
    ("2026-12-02T02:59:00", True),   # Wed 03:59 Berlin, still Tuesday's window
    ("2026-12-02T03:00:00", False),  # Wed 04:00 Berlin: closed
    ("2026-12-05T22:00:00", False),  # Sat night: no window opens on Saturday
    ("2026-12-05T02:00:00", True),   # Sat 03:00 Berlin: Friday's window, past midnight
])
def test_a_window_past_midnight_in_a_time_zone(when: str, open_: bool) -> None:
    assert is_open(windows(BERLIN_NIGHTS), utc(when)) is open_


def test_next_opening_skips_days_without_a_window_and_follows_daylight_saving() -> None:
    ws = windows(BERLIN_NIGHTS)
    assert next_open(ws, utc("2026-12-05T12:00:00")) == dt.datetime(2026, 12, 7, 22, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    summer = next_open(ws, utc("2026-07-01T12:00:00"))
    assert summer is not None and summer.astimezone(dt.UTC).hour == 20  # 22:00 CEST


def test_without_windows_everything_goes_and_outside_only_switches_wait() -> None:
    acts = [Action("replace", "a", reason="1.0 -> 2.0"), Action("start", "b"), Action("restart", "c"),
            Action("stop", "d"), Action("repair", "e"), Action("hold", "f")]
    assert gate(acts, {}, utc("2026-12-01T12:00:00")) == (acts, [], "")
    run, held, why = gate(acts, BERLIN_NIGHTS, utc("2026-12-01T12:00:00"))
    assert [a.model for a in run] == ["b", "d", "e", "f"] and [a.model for a in held] == ["a", "c"]
    assert why == "Waiting: next window 2026-12-01T22:00:00+01:00; held until then: a 1.0 -> 2.0, c restart"
    assert gate(acts, BERLIN_NIGHTS, utc("2026-12-01T22:00:00"))[1] == []


def test_an_unknown_time_zone_is_a_config_error() -> None:
    with pytest.raises(InvalidConfig, match="unknown time zone 'Mars/Olympus'"):
        windows({"activation": {"windows": [{"start": "01:00", "end": "02:00", "timezone": "Mars/Olympus"}]}})


def test_pull_slots_spread_a_step_over_the_minutes_its_rate_needs() -> None:
    from reconciler.fleet.rollouts import Rollout, Step, bucket

    r = Rollout("r", "g", "m", "1", "2", (Step(devices=("a", "b")), Step(percent=10), Step(percent=50)),
                step=2)
    devices = [f"dev{i}" for i in range(1000)]
    # step 3 adds 40% of 1000 devices: 400 pulls at 100 a minute take four minutes
    delays = {d: r.pull_delay(d, {}, 1000, 100) for d in devices if 10 <= bucket("r", d) < 50}
    assert set(delays.values()) == {0.0, 60.0, 120.0, 180.0}
    assert all(abs(sum(1 for v in delays.values() if v == s) - 100) < 30 for s in (0.0, 60.0, 120.0, 180.0))
    assert {r.pull_delay(d, {}, 1000, 100) for d in devices if bucket("r", d) < 10} == {0.0}  # pulled at step 2
    assert r.pull_delay("dev1", {}, 1000, None) == 0.0
    canary = Rollout("r", "g", "m", "1", "2", (Step(devices=("a", "b", "c", "d")),))
    assert [canary.pull_delay(d, {}, 1000, 2) for d in "abcd"] == [0.0, 0.0, 60.0, 60.0]
