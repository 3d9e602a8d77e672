"""The agent's local state: what it applied and runs, written atomically so a power cut leaves the old file or
the new one (temp file, fsync, rename, fsync the directory).

Written only when something other than the sampled performance figures changed: a no-op cycle (the common
case, every minute for years) must not wear the device's flash with a rewrite and two fsyncs.  CPU and
memory samples move every cycle; the status document carries them, and after a restart the next sample
replaces whatever the file held."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.durable import write_atomic

STATE_FILE = "state.json"


@dataclass
class AgentState:
    """Mutable during one cycle, saved at its end.  Plain JSON so an operator can read it."""

    applied_commit: str | None = None
    applied_key: str | None = None
    observed_commit: str | None = None
    # model -> {version, specHash, digest, since, state, lastError, performance{...}, group, runtime}
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    # specHash -> {model, version, message, commit}: versions that failed their health check at a commit
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    # model -> hash of its detectors, to tell workloads when theirs changed
    detectors: dict[str, str] = field(default_factory=dict)
    # condition type -> {status, reason, message, lastTransitionTime}
    conditions: dict[str, dict[str, str]] = field(default_factory=dict)
    runtimes: list[str] = field(default_factory=list)
    last_status_commit: float = 0.0
    push_error: str | None = None
    push_refused: bool = False
    # what the file holds, without the sampled figures (see _durable): not state, never saved or compared
    _saved: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, data_dir: Path) -> AgentState:
        path = data_dir / STATE_FILE
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError):
            # unreadable state is not fatal: the runtimes' own marks let the next cycle adopt what runs
            return cls()
        if not isinstance(raw, dict):
            return cls()
        return cls(
            applied_commit=raw.get("appliedCommit"), applied_key=raw.get("appliedKey"),
            observed_commit=raw.get("observedCommit"), models=raw.get("models") or {},
            failed=raw.get("failed") or {}, detectors=raw.get("detectors") or {},
            conditions=raw.get("conditions") or {}, runtimes=raw.get("runtimes") or [],
            last_status_commit=float(raw.get("lastStatusCommit") or 0.0), push_error=raw.get("pushError"),
            push_refused=bool(raw.get("pushRefused")), _saved=_durable(raw),
        )

    def save(self, data_dir: Path) -> None:
        doc = {
            "appliedCommit": self.applied_commit, "appliedKey": self.applied_key,
            "observedCommit": self.observed_commit, "models": self.models, "failed": self.failed,
            "detectors": self.detectors, "conditions": self.conditions, "runtimes": self.runtimes,
            "lastStatusCommit": self.last_status_commit, "pushError": self.push_error, "pushRefused": self.push_refused,
        }
        durable = _durable(doc)
        if durable == self._saved and (data_dir / STATE_FILE).exists():
            return
        write_atomic(data_dir / STATE_FILE, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
        self._saved = durable


SAMPLED = ("cpuPercent", "memoryBytes")  # performance figures sampled anew every cycle


def _durable(doc: dict[str, Any]) -> str:
    """The state document without the sampled figures, as one comparable string."""
    models = {}
    for name, info in (doc.get("models") or {}).items():
        info = dict(info)
        perf = info.get("performance")
        if isinstance(perf, dict):
            info["performance"] = {k: v for k, v in perf.items() if k not in SAMPLED}
        models[name] = info
    return json.dumps({**doc, "models": models}, sort_keys=True)
