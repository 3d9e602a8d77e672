"""How the agent learns the fleet branch's tip each cycle: the beacon first (when configured), then git from
the mirrors in order, then from the origin.

    beacon says the tip we have (or one we already contain)  -> no git at all this cycle
    every ``fullFetchEvery``-th cycle, or beacon unreadable   -> a real fetch, whatever the beacon says
    fetch: each mirror in order; one is used when its tip contains what we have (and the beacon's id, when
           there is one); a mirror that is down, behind or unrelated is noted and the next one tried;
           the origin last, used as it answers (the pass's fast-forward check guards what is applied)

Beacon and mirrors are untrusted: neither can make a device apply something the origin would not give it,
because the pass still refuses a rewind, checks signatures (``trust``) and validates the commit; history a
mirror served and the pass refused is passed over on that mirror from then on.  A broken beacon costs at most
``fullFetchEvery`` cycles of delay; a lying mirror costs a fetch from the next source.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import pygit2

from reconciler.agent.config import Beacon
from reconciler.beacon.client import BeaconClient
from reconciler.errors import ReconcilerError, Transient
from reconciler.git.mirror import FleetMirror

REFUSED = "refs/reconciler/refused/"
KEEP_REFUSED = 16


def public(url: str) -> str:
    """``url`` without any user or password: what status and logs may show of a source."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True)
class Polled:
    tip: pygit2.Oid
    source: str  # the URL (without password) that served the fetch, or "beacon" when none was needed
    notes: tuple[str, ...] = ()  # sources tried and not used, and why

    def to_status(self) -> dict[str, object]:
        return {"source": self.source, "notes": list(self.notes)}


class Poller:
    def __init__(self, mirror: FleetMirror, mirrors: Sequence[str] = (), beacon: Beacon | None = None) -> None:
        self.mirror = mirror
        self.mirrors = tuple(mirrors)
        self.beacon = beacon
        self.client = BeaconClient(beacon.url, beacon.timeout) if beacon else None
        self.fetches = 0  # git fetches made (all sources), for the bench and the tests
        self._since_fetch = 0
        self._tip: pygit2.Oid | None = None  # fetched in this process: a restart begins with a real fetch
        self._absent: str | None = None  # a commit id the beacon named and a real fetch did not bring
        # tips a mirror served that the pass refused (unsigned, rewind), kept as refs so a restart knows them
        self._refused = [r.target for r in self.mirror.repo.references.iterator()
                         if r.name.startswith(REFUSED) and isinstance(r.target, pygit2.Oid)]

    def poll(self) -> Polled:
        notes: list[str] = []
        want: str | None = None
        if self.client is not None and self.beacon is not None and self._tip is not None \
                and self._since_fetch + 1 < self.beacon.full_fetch_every:
            try:
                said = self.client.read(self.mirror.branch_ref).tip
            except Transient as exc:
                notes.append(str(exc))
            else:
                if said is not None and (said == self._absent or self._contains(self._tip, said)):
                    self._since_fetch += 1
                    return Polled(self._tip, "beacon")
                want = said
        tip, source = self._fetch(want, notes)
        self._since_fetch = 0
        self._tip = tip
        self._absent = want if want is not None and not self._contains(tip, want) else None
        return Polled(tip, source, tuple(notes))

    def refuse(self, polled: Polled) -> None:
        """The pass refused what ``polled`` brought: if a mirror served it, pass that history over from now on
        (the origin is asked instead), so a mirror cannot hold a device on a commit it will never apply."""
        if polled.source in (public(self.mirror.url), "beacon") or polled.tip in self._refused:
            return
        for old in self._refused[:-(KEEP_REFUSED - 1)]:
            with contextlib.suppress(KeyError, pygit2.GitError):
                self.mirror.repo.references.delete(f"{REFUSED}{old}")
        self._refused = [*self._refused[-(KEEP_REFUSED - 1):], polled.tip]
        self.mirror.repo.references.create(f"{REFUSED}{polled.tip}", polled.tip, force=True)
        self._tip = None  # the next cycle fetches for real, whatever the beacon says

    def _fetch(self, want: str | None, notes: list[str]) -> tuple[pygit2.Oid, str]:
        for url in self.mirrors:
            self.fetches += 1
            try:
                tip = self.mirror.fetch_from(url)
            except ReconcilerError as exc:
                notes.append(f"mirror {public(url)}: {str(exc).splitlines()[0]}")
                continue
            problem = self._judge(tip, want)
            if problem is None:
                return tip, public(url)
            notes.append(f"mirror {public(url)}: {problem}")
        self.fetches += 1
        return self.mirror.fetch(), public(self.mirror.url)

    def _judge(self, tip: pygit2.Oid, want: str | None) -> str | None:
        """Why a mirror's tip is not good enough, or None when it is."""
        for bad in self._refused:
            if self.mirror.is_descendant(tip, bad):
                return f"serves {str(bad)[:12]}, which this device refused: not used"
        if want is not None and not self._contains(tip, want):
            return f"does not have {want[:12]} yet (at {str(tip)[:12]})"
        have = self._tip
        if have is not None and not self.mirror.is_descendant(tip, have):
            if self.mirror.is_descendant(have, tip):
                return f"behind: at {str(tip)[:12]}, this device has {str(have)[:12]}"
            return f"at {str(tip)[:12]}, which does not contain {str(have)[:12]}: not used"
        return None

    def _contains(self, tip: pygit2.Oid, commit: str) -> bool:
        with contextlib.suppress(ValueError):
            oid = pygit2.Oid(hex=commit)
            return oid in self.mirror.repo and self.mirror.is_descendant(tip, oid)
        return False
