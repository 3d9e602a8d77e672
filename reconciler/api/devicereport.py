"""``device-status``: the local API's answers as a page for a person at the device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def render(status: Mapping[str, Any], models: Sequence[Mapping[str, Any]], detectors: Sequence[Mapping[str, Any]],
           health: Mapping[str, Any]) -> list[str]:
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    ready = conditions.get("Ready", {})
    lines = [f"{status.get('device')}: {status.get('phase')} ({ready.get('reason', '')})"]
    if ready.get("status") != "True" and ready.get("message"):
        lines.append(f"  {_first_line(ready['message'], 300)}")
    lines.append(f"  applied {str(status.get('appliedCommit') or '-')[:12]}  observed "
                 f"{str(status.get('observedCommit') or '-')[:12]}  last pass {status.get('lastSeen')}")
    push = status.get("push") or {}
    if push.get("pending") or push.get("lastError"):
        lines.append(f"  status queue: {push.get('pending', 0)} commit(s) not pushed"
                     f"{'; ' + str(push['lastError']) if push.get('lastError') else ''}")
    lines.append(f"  loop {'alive' if health.get('alive') else 'HUNG'}, {health.get('passes', 0)} passes since start")
    for c in status.get("conditions") or []:
        if c["type"] != "Ready" and c.get("status") == "True":
            lines.append(f"  {c['type']}: {c.get('reason')}: {_first_line(c.get('message'), 200)}")
    rows: list[tuple[str, ...]] = [("MODEL", "VERSION", "STATE", "ADDRESS", "SINCE", "DIGEST")]
    rows += [(m["name"], m["version"], str(m.get("state")), str(m.get("address") or "-"), str(m.get("since") or "-"),
              str(m.get("digest") or "-")[:19]) for m in models]
    lines += ["", *_table(rows)]
    for m in models:
        if m.get("lastError"):
            lines.append(f"  {m['name']}: {_first_line(m['lastError'], 300)}")
    if detectors:
        rows = [("DETECTOR", "MODEL", "STATE", "THRESHOLD")]
        rows += [(d["detector_id"], d["model"], str(d.get("state")), str(d.get("confidence_threshold", "-")))
                 for d in detectors]
        lines += ["", *_table(rows)]
    return lines


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _first_line(text: object, limit: int) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0][:limit] if lines else ""
