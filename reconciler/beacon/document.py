"""The beacon document: git's own ``info/refs`` layout, one ``<commit id><TAB><ref>`` line per branch.

The same format ``git update-server-info`` writes for dumb HTTP, so any tool that reads refs can read it and
a repository already served over dumb HTTP has a beacon at ``info/refs``.  A beacon is untrusted: it only
tells a device when to fetch; what the fetch brings is checked like any other fetch.  Standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from reconciler.errors import Transient

MAX_BYTES = 64 * 1024  # a beacon names a few branches; anything larger is not one
_LINE = re.compile(r"^(?P<oid>[0-9a-f]{40}|[0-9a-f]{64})\t(?P<ref>refs/\S+)$")


class BadBeacon(Transient):
    """The beacon answered something that is not a beacon: fetch git as if there were none."""

    reason = "BeaconInvalid"


def render(tips: Mapping[str, str]) -> bytes:
    """``{"refs/heads/main": "<oid>"}`` -> the document, refs in name order."""
    return "".join(f"{oid}\t{ref}\n" for ref, oid in sorted(tips.items())).encode()


def parse(data: bytes, where: str) -> dict[str, str]:
    """The document's ref -> commit id; BadBeacon naming ``where`` and the line when it is malformed."""
    if len(data) > MAX_BYTES:
        raise BadBeacon(f"{where}: larger than {MAX_BYTES} bytes: not a beacon")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise BadBeacon(f"{where}: not a beacon (not ASCII text)") from None
    tips: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line.rstrip("\r"))
        if match is None:
            raise BadBeacon(f"{where}: line {number}: expected '<commit id><TAB>refs/heads/<branch>'")
        tips[match["ref"]] = match["oid"]
    return tips
