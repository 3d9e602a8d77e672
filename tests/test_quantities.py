"""Memory sizes: one reading for the validator and every runtime."""

from __future__ import annotations

import pytest

from reconciler.errors import InvalidConfig
from reconciler.quantities import memory_bytes, parse_duration, parse_memory, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1536m", 1536 * 2**20), ("1g", 2**30), ("512k", 512 * 1024), ("2048", 2048), ("1Gi", 2**30),
     ("0.5g", 2**29), ("64MB", 64 * 2**20), ("512Mi", 512 * 2**20), ("100MiB", 100 * 2**20), ("1t", 2**40),
     ("10b", 10), (4096, 4096)],
)
def test_docker_and_kubernetes_units_are_binary(text: str | int, expected: int) -> None:
    assert parse_memory(text) == expected
    assert memory_bytes(text) == expected


@pytest.mark.parametrize("text", ["lots", "1x", "-1g", "", "5i", "1.g", -1, True])
def test_nonsense_is_refused_naming_the_field(text: str | int) -> None:
    assert parse_memory(text) is None
    with pytest.raises(InvalidConfig, match=r"resources\.memory"):
        memory_bytes(text)


@pytest.mark.parametrize(("value", "seconds"), [(90, 90.0), ("90", 90.0), ("5m", 300.0), ("2h", 7200.0),
                                                 ("7d", 604800.0), ("1.5m", 90.0), (0, 0.0)])
def test_durations(value: str | int, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5m", -1, True, "5w", ""])
def test_malformed_durations(value: str | int) -> None:
    assert parse_duration(value) is None


def test_log_sizes_read_as_memory_sizes() -> None:
    assert parse_size("100Mi") == 100 * 2**20
    assert parse_size("1.5Gi") == 3 * 2**29
    # one reader for every size: the seeds' 100m (as docker -m) means what 100Mi does
    assert parse_size("100m") == parse_size("100Mi") == parse_size("100MiB") and parse_size("100") == 100
    assert parse_size("100MX") is None
