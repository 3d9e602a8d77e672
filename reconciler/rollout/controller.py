"""The stateless rollout controller: read the fleet branch and the status branches, decide, commit.

Everything it knows comes from git at each run: the rollouts and their status from the fleet branch's tip,
when each step began from its history (history.py), what each device runs from its status branch
(cohort.py).  Each decision is one commit on the fleet branch whose message states the counts, so ``git
log`` is the whole story and the controller can run as a CI job, a cron job or a systemd timer.  If the branch
moved while it decided (a person pushed), the push is refused and the run starts again from the new tip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pygit2

from reconciler.errors import PushRejected
from reconciler.fleet.resolve import Resolver
from reconciler.fleet.rollouts import Rollout, problems
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FleetView
from reconciler.git.mirror import FleetMirror, GitAuth, redact
from reconciler.rollout import commit as commits
from reconciler.rollout import edit
from reconciler.rollout.cohort import Classifier, Member, count, members
from reconciler.rollout.decide import Counts, Decision, decide
from reconciler.rollout.history import step_starts
from reconciler.views.fleetrepo import FleetRepo, open_fleet_repo
from reconciler.views.snapshot import parse_time

log = logging.getLogger("reconciler.rollout")
ATTEMPTS = 3
PENDING = "refs/rollout/pending"  # the decisions being pushed


@dataclass(frozen=True)
class Evaluation:
    rollout: Rollout
    members: tuple[Member, ...]
    counts: Counts
    decision: Decision
    commit: str | None = None  # the decision's commit, once made


def evaluate(fleet: FleetRepo, tip: pygit2.Oid, now: float) -> list[Evaluation]:
    """Every rollout of the fleet branch at ``tip`` with its cohort, counts and the decision due now; status
    branches come from ``fleet.statuses`` (the fleet repo, or a status repository of their own)."""
    view = FleetView(GitSource(fleet.repo, tip, fleet.subdir))
    resolver = Resolver(view, all_groups=True)
    book = resolver.rollouts
    docs = view.rollouts()
    invalid: dict[str, str] = {}
    for p in problems(book, docs, view.groups(), {r.model: view.model(r.model) for r in book.all},
                      set(view.device_names())):
        invalid.setdefault(p.file, p.format())
    tips = fleet.status_tips()
    prefix = f"{fleet.subdir}/" if fleet.subdir else ""
    out = []
    for r in book.all:
        if not r.active:
            out.append(Evaluation(r, (), Counts(0, 0, 0, 0), Decision("wait", f"{r.phase.lower()}", r.step, r.phase)))
            continue
        if r.path in invalid:
            out.append(Evaluation(r, (), Counts(0, 0, 0, 0),
                                  Decision("wait", f"invalid, no decision: {invalid[r.path]}", r.step, r.phase)))
            continue
        starts = step_starts(fleet.repo, tip, prefix + r.path)
        since = parse_time(r.since)
        started = since.timestamp() if since is not None else float(starts[r.step].time if r.step in starts else now)
        classifier = Classifier(fleet.repo, fleet.statuses, tips, starts)
        found = tuple(classifier.classify(r, m) for m in members(resolver, r))
        counts = count(list(found))
        out.append(Evaluation(r, found, counts, decide(r, counts, now, started)))
    return out


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read(repo: pygit2.Repository, commit: pygit2.Oid, path: str) -> str:
    blob = cast(pygit2.Blob, repo[repo[commit].peel(pygit2.Commit).tree[path].id])
    return bytes(blob.data).decode("utf-8")


def decision_commit(repo: pygit2.Repository, parent: pygit2.Oid, subdir: str, ev: Evaluation, now: float,
                    sign_key: Path | None) -> pygit2.Oid:
    """The commit that records ``ev.decision``: the rollout's status, and on completion the group's pin."""
    r, d = ev.rollout, ev.decision
    prefix = f"{subdir}/" if subdir else ""
    path = prefix + r.path
    status = {"step": d.step, "phase": d.phase,
              "since": _iso(now) if (d.step, d.phase) != (r.step, r.phase) or not r.since else r.since,
              "message": d.message, "counts": ev.counts.to_dict()}
    files = {path: edit.set_status(r.path, _read(repo, parent, path), status).encode()}
    if d.kind == "complete":
        group_path = f"{prefix}groups/{r.group}.yaml"
        files[group_path] = edit.set_pin(group_path, _read(repo, parent, group_path), r.model,
                                         r.to_version).encode()
    title = f"rollout {r.name}: {d.message}"
    body = (f"Rollout: {r.name}\nRollout-Decision: {d.kind}\nRollout-Step: {d.step + 1}/{len(r.steps)}\n"
            f"Rollout-Phase: {d.phase}\nRollout-Counts: {ev.counts.text()}\n")
    unknown = [m.device for m in ev.members if m.verdict == "unknown"]
    failed = [f"{m.device} ({m.detail})" for m in ev.members if m.verdict == "failed"]
    if failed:
        body += "Failed: " + "; ".join(failed[:20]) + (" ..." if len(failed) > 20 else "") + "\n"
    if unknown:
        body += "Unknown: " + ", ".join(unknown[:50]) + (" ..." if len(unknown) > 50 else "") + "\n"
    return commits.commit(repo, parent, files, f"{title}\n\n{body}", sign_key, int(now))


class Controller:
    """One fleet repository reached through a mirror (fetch, commit, push); status branches read from it, or
    from ``status_location`` (the agents' ``statusRepo``), fetched afresh at each run."""

    def __init__(self, mirror: FleetMirror, subdir: str = "", status_location: str | None = None,
                 sign_key: Path | None = None, auth: GitAuth | None = None) -> None:
        self.mirror = mirror
        self.subdir = subdir.strip("/")
        self.status_location = status_location
        self.sign_key = sign_key
        self.auth = auth

    def fleet(self) -> FleetRepo:
        status = None
        if self.status_location is not None:
            status = open_fleet_repo(self.status_location, branch=self.mirror.branch, auth=self.auth).repo
        return FleetRepo(self.mirror.repo, self.mirror.branch, self.subdir, redact(self.mirror.url), status)

    def run_once(self, now: float) -> list[Evaluation]:
        """Fetch, decide every rollout, commit the decisions (one commit each) and push them."""
        for attempt in range(ATTEMPTS):
            self.mirror.fetch_all()
            fleet = self.fleet()
            tip = fleet.main_tip()
            results = evaluate(fleet, tip, now)
            head = tip
            done = []
            for ev in results:
                if ev.decision.commits:
                    head = decision_commit(self.mirror.repo, head, self.subdir, ev, now, self.sign_key)
                    ev = Evaluation(ev.rollout, ev.members, ev.counts, ev.decision, str(head))
                    log.info("rollout %s: %s (%s)", ev.rollout.name, ev.decision.kind, str(head)[:12])
                done.append(ev)
            if head == tip:
                return done
            # not refs/heads/<branch>: the views would take an unpushed local tip for the branch's
            self.mirror.repo.references.create(PENDING, head, force=True)
            try:
                self.mirror.push_ref(PENDING, f"refs/heads/{self.mirror.branch}")
                return done
            except PushRejected:
                if attempt == ATTEMPTS - 1:
                    raise
                log.warning("the fleet branch moved while deciding: deciding again on its new tip")
        raise AssertionError("unreachable")
