"""What a container is to the reconciler: an ``Observed`` read from ``docker inspect`` attributes and a
stats sample (memory, CPU, start time, restarts, drift from the settings we gave it, published ports).

Kept apart from ``docker.py`` because it is parsing, not talking to the daemon: apart from taking the stats
sample it only reads what the docker SDK already fetched, so the parsing is unit-tested on stats documents
without Docker.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reconciler.model import Observed
from reconciler.runtimes.docker_spec import L_CONFIG, L_MODEL, L_RESOLVED, L_SPEC, L_VERSION, observed_settings


def _epoch(stamp: str | None) -> float:
    if not stamp or stamp.startswith("0001-"):
        return 0.0
    # Docker prints nanoseconds; fromisoformat takes at most microseconds.
    m = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", stamp)
    if not m:
        return 0.0
    frac = (m[2] or ".0")[:7]
    zone = "+00:00" if m[3] == "Z" else m[3]
    return datetime.fromisoformat(m[1] + frac + zone).timestamp()


def _cpu_percent(stats: Mapping[str, Any], started_at: float = 0.0) -> float | None:
    """As ``docker stats`` computes it: container CPU time over host CPU time, times the CPU count.  A one-shot
    sample has no previous one: then the average since ``started_at``, as the process runtime reports it."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        try:
            used = float(cpu["cpu_usage"]["total_usage"]) / 1e9
        except (KeyError, TypeError):
            return None
        age = time.time() - started_at
        return round(100.0 * used / age, 2) if started_at > 0 and age > 0 else None
    online = cpu.get("online_cpus") or len(cpu["cpu_usage"].get("percpu_usage") or []) or 1
    return round(delta / system * online * 100.0, 2) if system > 0 and delta >= 0 else 0.0


def _memory_bytes(stats: Mapping[str, Any]) -> int | None:
    mem = stats.get("memory_stats") or {}
    if "usage" not in mem:
        return None
    detail = mem.get("stats") or {}
    # Page cache is reclaimable: docker stats subtracts it too (cgroup v1 "cache", v2 "inactive_file").
    cache = detail.get("total_inactive_file", detail.get("inactive_file", detail.get("cache", 0)))
    return int(mem["usage"]) - int(cache if cache < mem["usage"] else 0)


def sample_stats(container: Any) -> Mapping[str, Any] | None:
    import docker

    try:
        try:
            # one-shot: one sample (about 1 s) instead of two (up to 2 s) for the CPU delta
            result: Mapping[str, Any] = container.stats(stream=False, one_shot=True)
        except docker.errors.InvalidVersion:  # API < 1.41
            result = container.stats(stream=False)
        return result
    except Exception:  # performance data is best effort: a container exiting right now has none
        return None


def as_observed(container: Any, stats: Mapping[str, Any] | None) -> Observed:
    attrs = container.attrs
    labels = attrs.get("Config", {}).get("Labels") or {}
    state = attrs.get("State") or {}
    problems = []
    status = state.get("Status", container.status)
    if status != "running":
        problems.append(f"container {container.name} is {status} (exit code {state.get('ExitCode')})")
    try:
        wanted = json.loads(labels.get(L_CONFIG, "{}"))
    except ValueError:
        wanted = {}
    actual = observed_settings(attrs)
    changed = sorted(k for k in wanted if wanted[k] != actual.get(k))
    if changed:
        problems.append(f"container {container.name} changed by hand: {', '.join(changed)}")
    message = "; ".join(problems)
    if not problems:
        resolved = labels.get(L_RESOLVED)
        shown = [f"image {attrs['Config'].get('Image')} resolved to {resolved}"] if resolved else []
        message = "; ".join([*shown, published(attrs)]).strip("; ")
    return Observed(
        model=labels.get(L_MODEL, ""),
        version=labels.get(L_VERSION, ""),
        spec_hash=labels.get(L_SPEC, ""),
        handle=container.id,
        state="running" if status == "running" else "exited",
        started_at=_epoch(state.get("StartedAt")),
        memory_bytes=_memory_bytes(stats) if stats else None,
        cpu_percent=_cpu_percent(stats, _epoch(state.get("StartedAt"))) if stats else None,
        restarts=int(attrs.get("RestartCount") or 0),
        drifted=bool(problems),
        message=message,
    )


def published(attrs: Mapping[str, Any]) -> str:
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    shown = [f"{p} on {b[0]['HostIp']}:{b[0]['HostPort']}" for p, b in sorted(ports.items()) if b]
    return ("published " + ", ".join(shown)) if shown else ""
