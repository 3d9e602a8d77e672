"""The agent's log lines: ``text`` (a person at a terminal) or ``json`` (one object per line, for journald,
Loki, Elasticsearch).  Both mask the device's secrets, as every other output does."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

FORMATS = ("text", "json")
Context = Callable[[], Mapping[str, str | None]]
Mask = Callable[[str], str]
_HANDLER = "reconciler-agent"


class TextFormatter(logging.Formatter):
    def __init__(self, mask: Mask) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        return self.mask(super().format(record))


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "device", "commit"}``; ``commit`` is the fleet commit of the pass
    under way (or the applied one between passes); a traceback goes into ``exception``."""

    def __init__(self, context: Context, mask: Mask) -> None:
        super().__init__()
        self.context = context
        self.mask = mask

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.mask(record.getMessage()),
        }
        with contextlib.suppress(Exception):  # a log line must never fail because the agent is half set up
            doc.update(self.context())
        if record.exc_info:
            doc["exception"] = self.mask(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure(fmt: str, level: str, context: Context, mask: Mask) -> None:
    """One handler on the root logger, to stderr (journald takes it from there under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(context, mask) if fmt == "json" else TextFormatter(mask))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:  # a second agent in one process
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
