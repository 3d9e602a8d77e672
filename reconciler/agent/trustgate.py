"""The device's trust settings applied to a pass: the commit range before load, the ``Verified`` condition
and the signer of the applied commit.  Nothing here runs (nor imports ``cryptography``) without ``trust``."""

from __future__ import annotations

from collections.abc import Mapping

import pygit2

from reconciler.agent.config import AgentConfig
from reconciler.trust.anchor import load_policy
from reconciler.trust.commits import CommitCheck, Policy, Verdict, signer_of, verify_range


class TrustGate:
    def __init__(self, config: AgentConfig) -> None:
        assert config.allowed_signers is not None
        self.path = config.allowed_signers
        self.fleet_path = config.repo_path
        self._policy: tuple[tuple[int, int], Policy] | None = None
        self._checks: dict[str, CommitCheck] = {}  # commit -> its check, for the applied commit's signer

    def policy(self) -> Policy:
        """The anchor, read again when the file changes (a rotation on the device needs no restart)."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, -1)
        if self._policy is None or self._policy[0] != stamp:
            self._policy = (stamp, load_policy(self.path, self.fleet_path))  # raises NotFound / InvalidConfig
        return self._policy[1]

    def check(self, repo: pygit2.Repository, applied: pygit2.Oid | None, target: pygit2.Oid) -> Verdict:
        verdict = verify_range(repo, applied, target, self.policy())
        if len(self._checks) > 1000:
            self._checks.clear()
        self._checks.update((c.commit, c) for c in verdict.checks)
        return verdict

    def applied_check(self, repo: pygit2.Repository, applied: str | None) -> CommitCheck | None:
        if not applied:
            return None
        if applied not in self._checks:
            commit = repo.get(applied)
            if not isinstance(commit, pygit2.Commit):
                return None
            self._checks[applied] = signer_of(repo, commit, self.policy())
        return self._checks[applied]

    def condition(self, verdict: Verdict | None, previous: Mapping[str, Mapping[str, str]],
                  applied: CommitCheck | None) -> tuple[str, str, str]:
        if verdict is not None and verdict.checks:
            tip = verdict.tip
            assert tip is not None
            if verdict.ok:
                return ("True", "SignaturesVerified",
                        f"{verdict.message()}; {tip.commit[:12]} signed by {tip.signer} ({tip.key})")
            bad = verdict.failure
            assert bad is not None
            return ("False", bad.code, verdict.message())
        prev = previous.get("Verified")
        if prev and prev.get("status") in ("True", "False"):
            return (prev["status"], prev.get("reason", ""), prev.get("message", ""))
        if applied is None:
            return ("Unknown", "NothingApplied", "no commit verified yet")
        if applied.ok:
            return ("True", "SignaturesVerified", f"{applied.commit[:12]} signed by {applied.signer} ({applied.key})")
        return ("False", applied.code, f"applied commit {applied.commit[:12]} (applied before trust was configured) "
                                       f"is not trusted: {applied.detail}")
