"""Semantic rules that one document can be checked against on its own (no other file needed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from reconciler.errors import Problem
from reconciler.fleet.document import Document, Path_
from reconciler.quantities import parse_duration, parse_memory, parse_size

_SECRET_KEY = re.compile(
    r"(?i)(pass(word|wd)?|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|client[-_]?secret|auth)$"
)
_SECRET_VALUE = re.compile(
    r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.|[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@)"
)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def document_rules(doc: Document) -> list[Problem]:
    spec = doc.spec
    out: list[Problem] = []
    if doc.kind == "Fleet":
        out += _config_rules(doc, ("spec", "defaults"), spec.get("defaults"))
        for section, fields in (("status", ("heartbeatInterval", "staleAfter")),
                                ("agent", ("interval", "jitter", "healthTimeout"))):
            for f in fields:
                value = (spec.get(section) or {}).get(f)
                if value is not None and parse_duration(value) is None:
                    out.append(doc.problem(("spec", section, f),
                                           f"malformed duration {value!r}: use seconds or a number with s, m, h or d"))
    elif doc.kind == "Group":
        out += _config_rules(doc, ("spec", "config"), spec.get("config"))
        seen: dict[str, tuple[int, str]] = {}
        for i, pin in enumerate(spec.get("models") or []):
            name, version = pin["name"], pin["version"]
            if name in seen:
                first, first_version = seen[name]
                out.append(doc.problem(("spec", "models", i, "name"),
                                       f"group pins model {name!r} twice (versions {first_version!r} at models[{first}] "
                                       f"and {version!r}): a group runs one version of each model"))
            else:
                seen[name] = (i, version)
    elif doc.kind == "Device":
        out += _config_rules(doc, ("spec", "config"), spec.get("config"))
    elif doc.kind == "Model":
        for version, v in (spec.get("versions") or {}).items():
            mem = (v.get("resources") or {}).get("memory")
            if mem is not None and parse_memory(mem) is None:
                out.append(doc.problem(("spec", "versions", version, "resources", "memory"),
                                       f"malformed memory {mem!r}: use a number with k, m, g or t (e.g. 512m, 1g, 1536Mi)"))
    return out


def secret_rules(doc: Document) -> list[Problem]:
    """A value that looks like a secret, by its field name or its shape.  The value itself is never echoed."""
    out = []
    for where, key, value in _walk(doc.data, ()):
        if not isinstance(value, str) or not value.strip():
            continue
        if key is not None and key != "credentialsRef" and _SECRET_KEY.search(key):
            out.append(doc.problem(where, f"field {key!r} looks like a secret: keep secrets on the device and "
                                          "name them with credentialsRef"))
        elif _SECRET_VALUE.search(value):
            out.append(doc.problem(where, "this value looks like a secret (key, token or password in a URL): keep "
                                          "secrets on the device and name them with credentialsRef"))
    return out


def _walk(node: Any, where: Path_) -> Iterator[tuple[Path_, str | None, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*where, k), str(k), v
            yield from _walk(v, (*where, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*where, i), None, v
            yield from _walk(v, (*where, i))


def _config_rules(doc: Document, where: Path_, config: Any) -> list[Problem]:
    if not isinstance(config, dict):
        return []
    out: list[Problem] = []
    # the pairing of localInferenceStorage and pageSize, and the escalation flags, are schema rules (if/then,
    # dependentRequired) so that editors flag them too; what a schema cannot say is checked here
    size = (config.get("inferenceLog") or {}).get("localInferenceStorage")
    if size is not None and parse_size(size) is None:
        out.append(doc.problem((*where, "inferenceLog", "localInferenceStorage"),
                               f"malformed size {size!r}: use a number with k, m, g or t, or Ki, Mi, Gi, Ti "
                               "(e.g. 100m, 100Mi, 2Gi)"))
    storage = config.get("storage")
    if isinstance(storage, dict):
        driver = storage.get("driver")
        if driver == "s3":
            s3 = storage.get("s3") or {}
            absent = [f for f in ("region", "bucket", "path") if not s3.get(f)]
            if absent:
                out.append(doc.problem((*where, "storage", "s3") if "s3" in storage else (*where, "storage", "driver"),
                                       f"s3 storage needs {', '.join(absent)}"))
        elif driver == "filesystem" and not (storage.get("filesystem") or {}).get("path"):
            out.append(doc.problem((*where, "storage", "filesystem") if "filesystem" in storage
                                   else (*where, "storage", "driver"), "filesystem storage needs a path"))
    for i, w in enumerate((config.get("activation") or {}).get("windows") or []):
        zone = w.get("timezone") if isinstance(w, dict) else None
        if isinstance(zone, str) and not zone_exists(zone):
            out.append(doc.problem((*where, "activation", "windows", i, "timezone"),
                                   f"unknown time zone {zone!r}: use an IANA name like Europe/Berlin or UTC"))
    mem = (config.get("resources") or {}).get("memory")
    if isinstance(mem, str) and parse_memory(mem) is None:
        out.append(doc.problem((*where, "resources", "memory"),
                               f"malformed memory {mem!r}: use a number with k, m, g or t (e.g. 512m, 1g, 1536Mi)"))
    return out


def zone_exists(zone: str) -> bool:
    """An IANA time zone name the system knows (maintenance windows)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
