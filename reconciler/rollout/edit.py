"""The controller's edits of fleet files, made to the text so a person's comments and layout survive: the
rollout's ``status`` block replaced, and one pin of a group moved.  Each edit is checked by parsing the
result: everything but the edited field must read as before, else the edit is refused (never a half edit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from reconciler.errors import Stalled
from reconciler.fleet.document import parse

_TOP_KEY = re.compile(r"^[A-Za-z_\"'][^:#]*:")


def set_status(path: str, text: str, status: Mapping[str, Any]) -> str:
    """``text`` with its top-level ``status:`` block (if any) replaced by ``status``, at the end."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    skipping = False
    for line in lines:
        if re.match(r"^status\s*:", line):
            skipping = True
            continue
        if skipping and _TOP_KEY.match(line):
            skipping = False
        if not skipping:
            out.append(line)
    body = "".join(out).rstrip("\n") + "\n"
    block = yaml.safe_dump({"status": dict(status)}, sort_keys=False, default_flow_style=False)
    result = body + block
    _same_but(path, text, result, lambda d: d.pop("status", None), expect=("status", dict(status)))
    return result


def set_pin(path: str, text: str, model: str, version: str) -> str:
    """``text`` (a group) with its pin of ``model`` set to ``version``."""
    doc, _ = parse(path, text)
    if doc is None:
        raise Stalled(f"{path}: cannot read the group to move its pin of {model!r}")
    pins = doc.spec.get("models") or []
    index = next((i for i, p in enumerate(pins) if isinstance(p, dict) and p.get("name") == model), None)
    if index is None:
        raise Stalled(f"{path}: the group no longer pins model {model!r}")
    line, col = doc.pos(("spec", "models", index, "version"))
    lines = text.splitlines(keepends=True)
    target = lines[line - 1]
    pattern = re.compile(r"(version\s*:\s*)(\"[^\"]*\"|'[^']*'|[^\s,}#]+)")
    m = pattern.search(target, col - 1)
    if m is None:
        raise Stalled(f"{path}:{line}:{col}: cannot edit the version of the pin of {model!r} in place")
    lines[line - 1] = target[: m.start(2)] + json.dumps(version) + target[m.end(2):]
    result = "".join(lines)

    def drop(d: dict[str, Any]) -> None:
        d["spec"]["models"][index].pop("version", None)

    _same_but(path, text, result, drop, expect=None)
    new, _ = parse(path, result)
    assert new is not None
    if new.spec["models"][index].get("version") != version:
        raise Stalled(f"{path}:{line}:{col}: the edited pin does not read {version!r}")
    return result


def _same_but(path: str, before: str, after: str, drop: Any, expect: tuple[str, Any] | None) -> None:
    old, _ = parse(path, before)
    new, problems = parse(path, after)
    if old is None or new is None or problems:
        raise Stalled(f"{path}: the controller's edit does not parse; the file is left as it was")
    if expect is not None and new.data.get(expect[0]) != expect[1]:
        raise Stalled(f"{path}: the controller's edit does not read back; the file is left as it was")
    a, b = json.loads(json.dumps(old.data)), json.loads(json.dumps(new.data))
    drop(a)
    drop(b)
    if a != b:
        raise Stalled(f"{path}: the controller's edit would change more than it should; the file is left as it was")
