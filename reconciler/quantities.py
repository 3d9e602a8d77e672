"""Quantities as the fleet files write them, read one way by the validator, the views and every runtime.

Memory sizes: ``512k``, ``1536m``, ``1g`` as ``docker -m`` takes them, the Kubernetes forms ``512Mi`` / ``1Gi``, an
optional trailing ``b`` (``64MB``, ``100MiB``) and plain byte counts; units are binary, as Docker reads them.
Log and storage sizes read the same way; durations (``90``, ``5m``, ``7d``).
"""

from __future__ import annotations

import re
from typing import Any

from reconciler.errors import InvalidConfig

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?)([smhd]?)$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_memory(value: str | int) -> int | None:
    """Bytes, or None when ``value`` is not a size."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    m = _MEMORY.match(value)
    if not m or (m.group(3) and not m.group(2)):  # "5i" is no unit
        return None
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def memory_bytes(value: str | int) -> int:
    """Bytes for a runtime; InvalidConfig naming the field when ``value`` is not a size."""
    size = parse_memory(value)
    if size is None:
        raise InvalidConfig(f"resources.memory {value!r} is not a size like 512m, 1g or 1536Mi")
    return size


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``"90"``, ``"5m"``, ``"7d"``; None when malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    m = _DURATION.match(str(value).strip())
    return float(m.group(1)) * _DURATION_UNITS[m.group(3)] if m else None


def parse_size(value: str | int) -> int | None:
    """Bytes of a log or storage size; the same reader as memory (``100Mi``, ``100m``, ``1g``, a byte count), so a
    size the seeds write (``100m``) and a Kubernetes one (``100Mi``) both work wherever a size is taken."""
    return parse_memory(value)
