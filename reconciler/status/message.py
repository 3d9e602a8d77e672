"""Status commit messages that say what changed, so that ``git log status/<device>`` alone answers "what changed
when":

    Ready: fleet 3f2a1c9; shelf-detector 2.0.0 -> 1.0.0

    Fleet-Commit: 3f2a1c9e...

A heartbeat (nothing changed, the interval passed) says ``heartbeat``.  Pure: built from the previous and the new
status documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SHORT = 7
_SUBJECT_CHARS = 200


def model_changes(previous: Mapping[str, Any] | None, doc: Mapping[str, Any]) -> list[str]:
    """One phrase per model whose version or state changed: ``x 1.0 -> 2.0``, ``+x 1.0``, ``-x 1.0``,
    ``x 2.0 failed``."""
    before = {m["name"]: m for m in (previous or {}).get("models") or [] if isinstance(m, dict) and "name" in m}
    after = {m["name"]: m for m in doc.get("models") or []}
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if new is None:
            assert old is not None
            out.append(f"-{name} {old.get('version')}")
        elif old is None:
            out.append(f"+{name} {new['version']}" + ("" if new.get("state") == "running" else f" {new.get('state')}"))
        elif old.get("version") != new["version"]:
            tail = "" if new.get("state") == "running" else f" ({new.get('state')})"
            out.append(f"{name} {old.get('version')} -> {new['version']}{tail}")
        elif old.get("state") != new.get("state"):
            out.append(f"{name} {new['version']} {new.get('state')}")
    return out


def commit_message(previous: Mapping[str, Any] | None, doc: Mapping[str, Any], heartbeat: bool) -> str:
    """The message of the status commit that records ``doc`` after ``previous``."""
    applied = doc.get("appliedCommit")
    trailer = f"\n\nFleet-Commit: {applied}\n" if applied else "\n"
    changes = model_changes(previous, doc)
    same_conditions = previous is not None and _conditions(previous) == _conditions(doc)
    if heartbeat and not changes and same_conditions and (previous or {}).get("phase") == doc.get("phase"):
        return "heartbeat" + trailer
    subject = "; ".join([f"fleet {str(applied)[:SHORT] if applied else 'none applied'}", *changes])
    subject = f"{doc.get('phase')}: {subject}"[:_SUBJECT_CHARS]
    ready = next((c for c in doc.get("conditions") or [] if c.get("type") == "Ready"), None)
    body = ""
    if ready is not None and ready.get("status") != "True" and ready.get("message"):
        body = "\n\n" + str(ready["message"]).splitlines()[0][:1000]
    return subject + body + trailer


def _conditions(doc: Mapping[str, Any]) -> list[tuple[Any, Any, Any]]:
    return [(c.get("type"), c.get("status"), c.get("reason")) for c in doc.get("conditions") or []
            if isinstance(c, dict)]
