"""Path-scoped signers: ``fleet.yaml`` ``spec.policy.signers`` maps a principal to the path globs it may change.

    spec:
      policy:
        signers:
          rollout-bot@acme.example: ["rollouts/**"]
          site-north@acme.example: ["devices/site-north-*", "groups/site-north-*"]

Globs are relative to the fleet directory: ``*`` and ``?`` stay within one path segment, ``**`` spans
segments (``rollouts/**`` is everything under ``rollouts/``).  A principal that is not listed may change
everything; a signer with several principals may change what any of them may.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@functools.lru_cache(maxsize=1024)
def compile_glob(glob: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif glob.startswith("**", i):
            out += ".*"
            i += 2
        elif glob[i] == "*":
            out += "[^/]*"
            i += 1
        elif glob[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(glob[i])
            i += 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class Scopes:
    by_principal: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_policy(cls, policy: object) -> Scopes:
        signers = policy.get("signers") if isinstance(policy, Mapping) else None
        if not isinstance(signers, Mapping):
            return cls({})
        return cls({str(p): tuple(str(g) for g in (globs if isinstance(globs, list) else [globs]))
                    for p, globs in signers.items()})

    def scoped(self, principals: Iterable[str]) -> bool:
        """True when every principal is listed (so the globs limit what the signer may change)."""
        ps = list(principals)
        return bool(ps) and all(p in self.by_principal for p in ps)

    def disallowed(self, principals: Iterable[str], paths: Iterable[str]) -> list[str]:
        """The paths none of ``principals`` may change (empty when a principal is unlisted)."""
        ps = list(principals)
        if not self.scoped(ps):
            return []
        patterns = [compile_glob(g) for p in ps for g in self.by_principal[p]]
        return sorted(path for path in paths if not any(pat.match(path) for pat in patterns))
