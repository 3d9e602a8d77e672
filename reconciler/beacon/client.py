"""The device side of the beacon: a conditional GET (``If-None-Match`` / ``If-Modified-Since``) per cycle.

Standard library only (``urllib``): the agent imports this on every start and must stay light.  Every
failure is a ``Transient`` (the agent then fetches git as if there were no beacon); the answer is bounded
in size and in time.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from reconciler.beacon.document import MAX_BYTES, BadBeacon, parse
from reconciler.errors import Transient


@dataclass(frozen=True)
class Reading:
    tip: str | None  # the branch's commit id as the beacon tells it (None: the beacon does not list it)
    changed: bool  # False: the server answered 304 Not Modified


class BeaconClient:
    """Reads one beacon URL, remembering its validators (ETag, Last-Modified) and last answer in memory."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._etag: str | None = None
        self._modified: str | None = None
        self._tips: dict[str, str] | None = None
        self.requests = 0  # for the bench and the tests: how often the beacon was asked

    def read(self, ref: str) -> Reading:
        """What the beacon says about ``ref`` now."""
        headers = {"User-Agent": "reconciler-agent", "Cache-Control": "max-age=0"}
        if self._tips is not None:
            if self._etag:
                headers["If-None-Match"] = self._etag
            if self._modified:
                headers["If-Modified-Since"] = self._modified
        request = urllib.request.Request(self.url, headers=headers)
        deadline = time.monotonic() + self.timeout
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = _read_bounded(response, deadline, self.url)
                etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        except urllib.error.HTTPError as exc:
            if exc.code == 304 and self._tips is not None:
                return Reading(self._tips.get(ref), changed=False)
            raise Transient(f"beacon {self.url}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Transient(f"beacon {self.url}: unreachable ({reason})") from None
        tips = parse(data, f"beacon {self.url}")
        self._tips, self._etag, self._modified = tips, etag, modified
        return Reading(tips.get(ref), changed=True)


def _read_bounded(response: http.client.HTTPResponse, deadline: float, url: str) -> bytes:
    read = response.read
    data = b""
    while len(data) <= MAX_BYTES:
        if time.monotonic() > deadline:
            raise Transient(f"beacon {url}: answer too slow")
        chunk = read(8192)
        if not chunk:
            return bytes(data)
        data += chunk
    raise BadBeacon(f"beacon {url}: larger than {MAX_BYTES} bytes: not a beacon")
