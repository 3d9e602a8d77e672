"""``reconciler status --device NAME``: one device in detail, from its status branch (SA Engine's "actual state").

Its row of the fleet table (phase, convergence, last seen, stale) and what its last status document says:
every model with version, desired version, state, since, digest, address, last error and warnings; the
conditions; drift; detectors; the connection (fetch, and the status push with what is queued).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, TextIO

import pygit2
import yaml

from reconciler.errors import NotFound
from reconciler.fleet.document import Loader
from reconciler.views import snapshot
from reconciler.views.statusview import DeviceRow, StatusView, age_text


@dataclass(frozen=True)
class DeviceDetail:
    row: DeviceRow
    status: dict[str, Any]  # the last status document, as the device wrote it ({} when never seen)
    message: str  # the subject of the last status commit

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "statusMessage": self.message, "status": self.status}


def detail(view: StatusView, device: str) -> DeviceDetail:
    if device not in view.devices:
        close = difflib.get_close_matches(device, view.devices, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise NotFound(f"unknown device {device!r}: no devices/{device}.yaml on {view.fleet.branch} and no "
                       f"status/{device} branch in {view.fleet.label}{hint}")
    tip = view.fleet.status_tip(device)
    row = view.row(device, tip)
    if tip is None:
        return DeviceDetail(row, {}, "")
    commit = view.repo[tip].peel(pygit2.Commit)
    blob = snapshot.status_blob(view.repo, commit)
    try:
        doc = yaml.load(blob, Loader=Loader) if blob else {}
    except yaml.YAMLError:
        doc = {}
    return DeviceDetail(row, doc if isinstance(doc, dict) else {}, commit.message.splitlines()[0] if commit.message else "")


def write_text(d: DeviceDetail, out: TextIO) -> None:
    r, s = d.row, d.status
    out.write(f"device {r.device}: {r.phase or 'never seen'}, {r.convergence}"
              f"{' (applied ' + r.applied[:12] + ')' if r.applied else ''}\n")
    if not r.seen:
        out.write("no status branch yet: the device has never reported\n")
        return
    out.write(f"last seen {age_text(r.age_seconds)} ({s.get('lastSeen', '-')}), stale {'yes' if r.stale else 'no'}; "
              f"agent {s.get('agentVersion', '-')}, runtime {s.get('runtime') or '-'}\n")
    out.write(f"observed {str(s.get('observedCommit') or '-')[:12]}; last status commit "
              f"{str(r.status_commit)[:12]}: {d.message}\n")
    conditions = {c.get("type"): c for c in s.get("conditions") or [] if isinstance(c, dict)}
    connected = conditions.get("Connected") or {}
    reported = conditions.get("StatusReported") or {}
    push = s.get("push") or {}
    out.write(f"connection: fetch {_condition(connected)}; status push {_condition(reported)}, "
              f"{push.get('pending', 0)} queued{'; ' + str(push['lastError']) if push.get('lastError') else ''}\n")
    out.write("\nmodels:\n")
    models = [m for m in s.get("models") or [] if isinstance(m, dict)]
    if not models:
        out.write("  (none)\n")
    for m in models:
        wanted = f" (desired {m['desiredVersion']})" if m.get("desiredVersion") else ""
        out.write(f"  {m.get('name')} {m.get('version')}{wanted}: {m.get('state')} since {m.get('since', '-')}\n")
        out.write(f"    digest {m.get('digest') or '-'}; address {m.get('address') or '-'}; group {m.get('group') or '-'}\n")
        if m.get("lastError"):
            out.write(f"    last error: {m['lastError']}\n")
        for w in m.get("warnings") or []:
            out.write(f"    warning: {w}\n")
    out.write("\nconditions:\n")
    for ctype, c in conditions.items():
        message = f": {c['message']}" if c.get("message") else ""
        out.write(f"  {ctype} {c.get('status')} {c.get('reason')} since {c.get('lastTransitionTime', '-')}{message}\n")
    out.write("\ndrift:\n" + "".join(f"  {line}\n" for line in s.get("drift") or []) if s.get("drift") else "\ndrift: none\n")
    detectors = [x for x in s.get("detectors") or [] if isinstance(x, dict)]
    if detectors:
        out.write("\ndetectors:\n")
        for x in detectors:
            out.write(f"  {x.get('detector_id')} -> {x.get('model')} {x.get('version') or '-'}: {x.get('state')}\n")


def _condition(c: dict[str, Any]) -> str:
    if not c:
        return "unknown"
    return f"{c.get('status')} ({c.get('reason')}{': ' + str(c['message']) if c.get('message') else ''})"
