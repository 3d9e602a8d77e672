"""Signed desired state: every commit between the applied one and the tip, checked on the commit objects.

The one entry point is ``verify_range(repo, applied, tip, policy) -> Verdict`` (the agent, ``reconciler
verify``, the pre-receive hook, bundles and rollouts all call it).  For each commit in the range (all of
them, merges included; for a first apply, ``applied`` is None and only the tip is checked):

1. it carries an SSH signature (``gpgsig``, namespace ``git``) that verifies over the commit payload;
2. its key is an allowed signer valid at the commit's committer time (what ``git verify-commit`` checks),
   in the device's anchor or in ``.fleet/allowed_signers`` as of the commit's parents: a key added by a
   commit vouches only for the commits after it, so only a key trusted before can add one;
3. every path it changes is allowed to its signer by ``spec.policy.signers`` in ``fleet.yaml`` as of its
   first parent (so a commit cannot widen its own scope).  A merge is charged only with what differs
   from every parent (its own resolutions); the merged commits are checked one by one.

For a first apply nothing is trusted yet but the anchor: the tip must be signed by an anchor key.
OpenPGP signatures are reported as unsupported: the device verifies SSH signatures only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pygit2

from reconciler.errors import InvalidConfig, ReconcilerError
from reconciler.fleet.document import parse as parse_yaml
from reconciler.trust import sshsig
from reconciler.trust.allowed_signers import AllowedSigners
from reconciler.trust.allowed_signers import parse as parse_signers
from reconciler.trust.scopes import Scopes

NAMESPACE = "git"
REPO_SIGNERS = ".fleet/allowed_signers"


@dataclass(frozen=True)
class Policy:
    anchor: AllowedSigners  # the device's own allowed_signers
    path: str = ""  # the fleet's directory in the repository ("" = the root)

    def fleet_path(self, rel: str) -> str:
        return f"{self.path}/{rel}" if self.path else rel


@dataclass(frozen=True)
class CommitCheck:
    commit: str
    author: str
    summary: str
    code: str  # Verified | Unsigned | UnknownKey | ExpiredKey | KeyNotYetValid | NamespaceNotAllowed |
    #            BadSignature | MalformedSignature | UnsupportedKey | UnsupportedSignature | PathNotAllowed |
    #            InvalidAllowedSigners
    detail: str = ""
    signer: str = ""  # the key's principals, comma-separated
    key: str = ""  # SHA256 fingerprint

    @property
    def ok(self) -> bool:
        return self.code == "Verified"

    def line(self) -> str:
        head = f"{self.commit[:12]} {self.code}"
        who = f" by {self.signer} ({self.key})" if self.signer else (f" key {self.key}" if self.key else "")
        tail = f": {self.detail}" if self.detail else ""
        return f"{head}{who} author {self.author}: {self.summary}{tail}"


@dataclass(frozen=True)
class Verdict:
    checks: tuple[CommitCheck, ...] = ()  # oldest first

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failure(self) -> CommitCheck | None:
        return next((c for c in self.checks if not c.ok), None)

    @property
    def tip(self) -> CommitCheck | None:
        return self.checks[-1] if self.checks else None

    def message(self) -> str:
        bad = self.failure
        if bad is None:
            n = len(self.checks)
            return f"{n} commit{'s' if n != 1 else ''} signed by allowed signers"
        return (f"commit {bad.commit[:12]} by {bad.author} ({bad.summary!r}) is not trusted: {bad.code}"
                f"{': ' + bad.detail if bad.detail else ''}")


@dataclass
class _Context:
    repo: pygit2.Repository
    policy: Policy
    signers: dict[str, AllowedSigners] = field(default_factory=dict)  # blob id -> parsed
    scopes: dict[str, Scopes] = field(default_factory=dict)


def verify_range(repo: pygit2.Repository, applied: pygit2.Oid | None, tip: pygit2.Oid,
                 policy: Policy) -> Verdict:
    """Check every commit reachable from ``tip`` and not from ``applied``; see the module docstring."""
    ctx = _Context(repo, policy)
    if applied is None:
        commit = repo[tip]
        if not isinstance(commit, pygit2.Commit):
            raise InvalidConfig(f"{tip} is not a commit")
        return Verdict((_check(ctx, commit, first_apply=True),))
    walker = repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE)
    walker.hide(applied)
    return Verdict(tuple(_check(ctx, c, first_apply=False) for c in walker))


def signer_of(repo: pygit2.Repository, commit: pygit2.Commit, policy: Policy) -> CommitCheck:
    """One commit's check on its own (for views: who signed what was applied)."""
    return _check(_Context(repo, policy), commit, first_apply=False)


def _check(ctx: _Context, commit: pygit2.Commit, *, first_apply: bool) -> CommitCheck:
    author = f"{commit.author.name} <{commit.author.email}>"
    base = CommitCheck(str(commit.id), author, commit.message.split("\n", 1)[0][:120], "Verified")
    sig, payload = commit.gpg_signature
    if not sig:
        return _with(base, "Unsigned", "the commit carries no signature")
    if b"BEGIN PGP SIGNATURE" in sig[:64] or b"BEGIN SIGNED MESSAGE" in sig[:64]:
        return _with(base, "UnsupportedSignature",
                     "OpenPGP/X.509 signatures are not accepted; sign with an SSH key (gpg.format=ssh)")
    try:
        parsed = sshsig.parse(sig)
        key = parsed.key
        sshsig.verify(parsed, payload, NAMESPACE)
    except sshsig.BadSignature as exc:
        return _with(base, exc.code, str(exc))
    base = _with(base, "Verified", key=key.fingerprint)
    try:
        trusted = ctx.policy.anchor if first_apply else _trusted(ctx, commit)
    except InvalidConfig as exc:
        return _with(base, "InvalidAllowedSigners", _first_problem(exc))
    found = trusted.match(key, NAMESPACE, float(commit.committer.time))
    if not found.principals:
        return _with(base, found.problem, found.detail)
    base = _with(base, "Verified", signer=",".join(found.principals))
    if not first_apply:
        try:
            _signers_at(ctx, commit)  # a commit that breaks the repo's file is refused, located
        except InvalidConfig as exc:
            return _with(base, "InvalidAllowedSigners", _first_problem(exc))
    scopes = _scopes(ctx, commit.parents[0] if commit.parents else commit)
    if scopes.scoped(found.principals):
        bad = scopes.disallowed(found.principals, _changed_paths(ctx, commit))
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            return _with(base, "PathNotAllowed",
                         f"{base.signer} may change only {', '.join(_globs(scopes, found.principals))}; "
                         f"changed {', '.join(bad[:3])}{more}")
    return base


def _with(check: CommitCheck, code: str, detail: str = "", *, key: str | None = None,
          signer: str | None = None) -> CommitCheck:
    return CommitCheck(check.commit, check.author, check.summary, code, detail,
                       check.signer if signer is None else signer, check.key if key is None else key)


def _first_problem(exc: InvalidConfig) -> str:
    return exc.problems[0].format() if exc.problems else exc.summary


def _globs(scopes: Scopes, principals: tuple[str, ...]) -> list[str]:
    return sorted({g for p in principals for g in scopes.by_principal.get(p, ())})


def _blob(ctx: _Context, commit: pygit2.Commit, rel: str) -> pygit2.Blob | None:
    try:
        obj = commit.tree[ctx.policy.fleet_path(rel)]
    except KeyError:
        return None
    return obj if isinstance(obj, pygit2.Blob) else None


def _signers_at(ctx: _Context, commit: pygit2.Commit) -> AllowedSigners:
    blob = _blob(ctx, commit, REPO_SIGNERS)
    if blob is None:
        return AllowedSigners()
    key = str(blob.id)
    if key not in ctx.signers:
        ctx.signers[key] = parse_signers(blob.data, f"{str(commit.id)[:12]}:{ctx.policy.fleet_path(REPO_SIGNERS)}")
    return ctx.signers[key]


def _trusted(ctx: _Context, commit: pygit2.Commit) -> AllowedSigners:
    out = ctx.policy.anchor
    for parent in commit.parents:
        out = out + _signers_at(ctx, parent)
    return out


def _scopes(ctx: _Context, commit: pygit2.Commit) -> Scopes:
    blob = _blob(ctx, commit, "fleet.yaml")
    if blob is None:
        return Scopes({})
    key = str(blob.id)
    if key not in ctx.scopes:
        ctx.scopes[key] = _read_scopes(blob.data)
    return ctx.scopes[key]


def _read_scopes(data: bytes) -> Scopes:
    try:
        doc, _ = parse_yaml("fleet.yaml", data)
    except ReconcilerError:
        doc = None
    spec: Any = doc.data.get("spec") if doc is not None and isinstance(doc.data, dict) else None
    # an unreadable fleet.yaml is the validator's to report; it scopes nobody (the anchor still applies)
    return Scopes.from_policy(spec.get("policy") if isinstance(spec, dict) else None)


def _changed_paths(ctx: _Context, commit: pygit2.Commit) -> set[str]:
    """Paths (relative to the fleet dir) that differ from every parent; all paths for a root commit."""
    diffs = [p.tree.diff_to_tree(commit.tree) for p in commit.parents] or [commit.tree.diff_to_tree(swap=True)]
    result: set[str] | None = None
    for diff in diffs:
        paths = {p for d in diff.deltas for p in (d.old_file.path, d.new_file.path)}
        result = paths if result is None else result & paths
    prefix = f"{ctx.policy.path}/" if ctx.policy.path else ""
    # outside the fleet dir: kept absolute, so no relative glob matches it
    return {p[len(prefix):] if p.startswith(prefix) else f"/{p}" for p in result or set()}
