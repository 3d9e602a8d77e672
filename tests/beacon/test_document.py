"""The beacon document: git's info/refs lines, parsed strictly (a beacon is untrusted input)."""

from __future__ import annotations

import pytest

from reconciler.beacon.document import MAX_BYTES, BadBeacon, parse, render
from reconciler.errors import Transient

A, B = "a" * 40, "b" * 64


def test_render_then_parse_gives_the_tips_back() -> None:
    tips = {"refs/heads/main": A, "refs/heads/edge": B}
    data = render(tips)
    assert data == f"{B}\trefs/heads/edge\n{A}\trefs/heads/main\n".encode()
    assert parse(data, "b") == tips


def test_the_output_of_git_update_server_info_is_a_beacon() -> None:
    assert parse(f"{A}\trefs/heads/main\r\n\n{B}\trefs/tags/v1\n".encode(), "b")["refs/heads/main"] == A


@pytest.mark.parametrize(("data", "words"), [
    (b"<html>Not found</html>", "line 1"),
    (f"{A}\trefs/heads/main\n{A[:39]}\trefs/heads/x\n".encode(), "line 2"),
    (f"{A} refs/heads/main".encode(), "line 1"),
    ("é".encode(), "not ASCII"),
    (b"x" * (MAX_BYTES + 1), "larger than"),
])
def test_anything_else_is_refused_with_where_and_why(data: bytes, words: str) -> None:
    with pytest.raises(BadBeacon) as info:
        parse(data, "beacon http://cdn/fleet")
    assert "beacon http://cdn/fleet" in str(info.value) and words in str(info.value)
    assert isinstance(info.value, Transient)  # the agent then fetches git as if there were no beacon
