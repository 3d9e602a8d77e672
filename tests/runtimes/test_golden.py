"""The golden-set gate against the example model server (a real HTTP server on loopback)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.model import GoldenSet
from reconciler.runtimes import golden
from reconciler.runtimes.health import http_check
from tests.agentlab import SERVE, free_port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(b"label:cat\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(SERVE), "--port", str(port)], env={"MODEL_DIR": str(model_dir)})
    try:
        assert http_check(f"http://127.0.0.1:{port}/healthz", 10).healthy
        yield port, model_dir
    finally:
        proc.terminate()
        proc.wait(10)


def cases(model_dir: Path, *lines: str) -> None:
    (model_dir / "golden.jsonl").write_text("\n".join(lines) + "\n")


def test_answers_within_tolerance_pass_and_the_first_miss_is_named(server: tuple[int, Path]) -> None:
    port, model_dir = server
    gs = GoldenSet("golden.jsonl", "/infer", 0.05)
    cases(model_dir, '{"request": {"image": "a"}, "expected": {"label": "cat", "confidence": 0.9}}',
          '{"request": {"image": "b"}, "expected": {"label": "cat", "confidence": 0.95}}')
    result = golden.check("127.0.0.1", port, str(model_dir), gs, 10)
    assert result.healthy and result.message == "golden set golden.jsonl: 2 cases passed"
    cases(model_dir, '{"request": {"image": "a"}, "expected": {"label": "cat"}}', "",
          '{"request": {"image": "b"}, "expected": {"label": "person", "confidence": 0.93}}')
    result = golden.check("127.0.0.1", port, str(model_dir), gs, 10)
    assert not result.healthy
    assert result.message == ('golden set golden.jsonl: case at line 3 failed: answer.label is "cat", '
                              'expected "person"')
    cases(model_dir, '{"request": {}, "expected": {"confidence": 0.9}}')
    tight = golden.check("127.0.0.1", port, str(model_dir), GoldenSet("golden.jsonl", "/infer", 0.0), 10)
    assert tight.message.endswith("answer.confidence is 0.93, expected 0.9 within 0")


def test_bad_case_files_and_paths_fail_clearly(server: tuple[int, Path]) -> None:
    port, model_dir = server
    gs = GoldenSet("golden.jsonl", "/infer")
    assert golden.check("127.0.0.1", port, str(model_dir), gs, 5).message.endswith(
        "cannot read golden.jsonl in the artifact: No such file or directory")
    cases(model_dir, '{"request": 1}')
    assert golden.check("127.0.0.1", port, str(model_dir), gs, 5).message.endswith(
        "golden.jsonl:1: a case needs 'request' and 'expected'")
    cases(model_dir, "{nope")
    assert "golden.jsonl:1: not JSON" in golden.check("127.0.0.1", port, str(model_dir), gs, 5).message
    outside = GoldenSet("../etc.jsonl", "/infer")
    assert golden.check("127.0.0.1", port, str(model_dir), outside, 5).message.endswith(
        "../etc.jsonl is outside the model's directory")
    cases(model_dir, '{"request": {}, "expected": {}}')
    start = time.monotonic()
    res = golden.check("127.0.0.1", port, str(model_dir), GoldenSet("golden.jsonl", "/nothing-here"), 5)
    assert res.message.endswith("case at line 1: POST /nothing-here: HTTP 404") and time.monotonic() - start < 5


@pytest.mark.parametrize(("answer", "expected", "why"), [
    ({"a": [1, 2.0]}, {"a": [1, 2.01]}, ""),
    ({"a": [1, 2]}, {"a": [1]}, "answer.a is [1, 2], expected [1]"),
    ({"a": True}, {"a": 1}, "answer.a is true, expected a number near 1"),
    ({"a": 1}, {"a": True}, "answer.a is 1, expected true"),
    ({"b": 1}, {"a": None}, "answer.a is missing (expected null)"),
    ("x", {"a": 1}, 'answer is "x", expected a mapping'),
])
def test_comparison_rules(answer: object, expected: object, why: str) -> None:
    assert golden.mismatch(answer, expected, 0.05, "answer") == why
