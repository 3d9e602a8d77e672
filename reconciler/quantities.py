"""Memory sizes as the fleet files write them, read one way by the validator and by every runtime.

``512k``, ``1536m``, ``1g`` as ``docker -m`` takes them, the Kubernetes forms ``512Mi`` / ``1Gi``, an optional
trailing ``b`` (``64MB``, ``100MiB``) and plain byte counts.  Units are binary, as Docker reads them.
"""

from __future__ import annotations

import re

from reconciler.errors import InvalidConfig

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)


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
