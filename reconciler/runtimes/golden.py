"""The golden-set gate: an ML-aware health check run after the HTTP check passes and before the old version
stops.  Each case of the version's golden file (JSON lines ``{"request": ..., "expected": ...}`` in the
artifact) is POSTed to the new workload; numbers must be within ``tolerance`` of the expected ones, everything
else equal (an expected mapping names the fields that count: extra fields in the answer are ignored).  The
first miss fails the health check with the case that missed, so the version is rolled back.

Bounded: at most MAX_CASES cases from a file of at most MAX_BYTES, each answer read up to MAX_ANSWER bytes,
all within the health check's timeout.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from reconciler.model import GoldenSet, HealthResult

MAX_BYTES = 16 * 1024 * 1024
MAX_CASES = 10_000
MAX_ANSWER = 4 * 1024 * 1024


def check(host: str, port: int, model_dir: str, golden: GoldenSet, timeout: float) -> HealthResult:
    start = time.monotonic()
    where = f"golden set {golden.file}"
    cases, problem = _cases(Path(model_dir), golden.file)
    if problem:
        return HealthResult(False, f"{where}: {problem}", time.monotonic() - start)
    deadline = start + timeout
    for line, request, expected in cases:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return HealthResult(False, f"{where}: timed out after {timeout:g}s before case at line {line}",
                                time.monotonic() - start)
        try:
            status, answer = _post(host, port, golden.path, request, min(remaining, 30.0))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return HealthResult(False, f"{where}: case at line {line}: POST {golden.path}: "
                                       f"{type(exc).__name__}: {exc}"[:500], time.monotonic() - start)
        if not 200 <= status < 300:
            return HealthResult(False, f"{where}: case at line {line}: POST {golden.path}: HTTP {status}",
                                time.monotonic() - start)
        miss = mismatch(answer, expected, golden.tolerance, "answer")
        if miss:
            return HealthResult(False, f"{where}: case at line {line} failed: {miss}"[:800], time.monotonic() - start)
    return HealthResult(True, f"{where}: {len(cases)} cases passed", time.monotonic() - start)


def _cases(model_dir: Path, file: str) -> tuple[list[tuple[int, Any, Any]], str]:
    path = (model_dir / file).resolve()
    if model_dir.resolve() not in path.parents:
        return [], f"{file} is outside the model's directory"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        return [], f"cannot read {file} in the artifact: {exc.strerror or exc}"
    if len(data) > MAX_BYTES:
        return [], f"{file} is larger than {MAX_BYTES // (1024 * 1024)} MiB"
    cases = []
    for number, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            case = json.loads(raw)
        except ValueError as exc:
            return [], f"{file}:{number}: not JSON ({exc})"
        if not isinstance(case, dict) or "request" not in case or "expected" not in case:
            return [], f"{file}:{number}: a case needs 'request' and 'expected'"
        cases.append((number, case["request"], case["expected"]))
        if len(cases) > MAX_CASES:
            return [], f"{file}: more than {MAX_CASES} cases"
    if not cases:
        return [], f"{file} holds no cases"
    return cases, ""


def _post(host: str, port: int, path: str, body: Any, timeout: float) -> tuple[int, Any]:
    # http.client, as the HTTP health check: no proxy from the environment for a workload on loopback
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", path if path.startswith("/") else "/" + path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "User-Agent": "edge-reconciler-golden"})
        response = conn.getresponse()
        raw = response.read(MAX_ANSWER + 1)
        if len(raw) > MAX_ANSWER:
            raise ValueError(f"answer larger than {MAX_ANSWER} bytes")
        return response.status, json.loads(raw) if raw.strip() else None
    finally:
        conn.close()


def mismatch(answer: Any, expected: Any, tolerance: float, where: str) -> str:
    """Why ``answer`` does not match ``expected`` ('' when it does)."""
    if isinstance(expected, bool) or not isinstance(expected, int | float):
        if isinstance(expected, dict):
            if not isinstance(answer, dict):
                return f"{where} is {_show(answer)}, expected a mapping"
            for key, value in expected.items():
                if key not in answer:
                    return f"{where}.{key} is missing (expected {_show(value)})"
                miss = mismatch(answer[key], value, tolerance, f"{where}.{key}")
                if miss:
                    return miss
            return ""
        if isinstance(expected, list):
            if not isinstance(answer, list) or len(answer) != len(expected):
                return f"{where} is {_show(answer)}, expected {_show(expected)}"
            for i, (a, e) in enumerate(zip(answer, expected, strict=True)):
                miss = mismatch(a, e, tolerance, f"{where}[{i}]")
                if miss:
                    return miss
            return ""
        return "" if answer == expected and type(answer) is type(expected) else \
            f"{where} is {_show(answer)}, expected {_show(expected)}"
    if isinstance(answer, bool) or not isinstance(answer, int | float):
        return f"{where} is {_show(answer)}, expected a number near {expected!r}"
    if abs(answer - expected) > tolerance:
        return f"{where} is {answer!r}, expected {expected!r} within {tolerance:g}"
    return ""


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
