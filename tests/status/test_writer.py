"""The status branch writer against file:// bare repos (fast; the ssh server cases live in tests/git/test_mirror.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest

from reconciler.errors import NotFound
from reconciler.git.mirror import FleetMirror
from reconciler.status.writer import StatusWriter


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare fleet repo with one commit on main."""
    bare = tmp_path / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work))
    (work / "fleet.yaml").write_text("apiVersion: fleet/v1\nkind: Fleet\n")
    (work / "devices").mkdir()
    (work / "devices" / "dev1.yaml").write_text("kind: Device\n")
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "fleet", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    return bare


def mirror_of(origin: Path, where: Path) -> FleetMirror:
    return FleetMirror(where, f"file://{origin}", timeout=10)


def remote_log(origin: Path, ref: str) -> list[str]:
    out = git("--git-dir", str(origin), "log", "--format=%s", ref)
    return out.splitlines()


def test_no_change_makes_no_commit(origin: Path, tmp_path: Path) -> None:
    writer = StatusWriter(mirror_of(origin, tmp_path / "data" / "repo"), "dev1")
    assert writer.previous_text() is None
    first = writer.commit("phase: Ready\n", "Ready")
    assert first is not None
    assert writer.commit("phase: Ready\n", "heartbeat with nothing new") is None
    assert writer.repo.references["refs/heads/status/dev1"].target == first
    assert writer.previous_text() == "phase: Ready\n"


def test_parent_chain_is_an_orphan_branch_holding_only_status_yaml(origin: Path, tmp_path: Path) -> None:
    mirror = mirror_of(origin, tmp_path / "repo")
    main_tip = mirror.fetch()
    writer = StatusWriter(mirror, "dev1")
    oids = [writer.commit(f"phase: {p}\n", p) for p in ("Progressing", "Ready", "Degraded")]
    repo = mirror.repo
    tip = repo.references["refs/heads/status/dev1"].peel(pygit2.Commit)
    chain = []
    commit: pygit2.Commit | None = tip
    while commit is not None:
        chain.append(commit)
        assert [e.name for e in commit.tree] == ["status.yaml"]
        commit = commit.parents[0] if commit.parents else None
    assert [c.id for c in reversed(chain)] == oids
    assert [c.message for c in reversed(chain)] == ["Progressing", "Ready", "Degraded"]
    assert repo.merge_base(tip.id, main_tip) is None


def test_commits_are_authored_and_committed_as_the_device(origin: Path, tmp_path: Path) -> None:
    writer = StatusWriter(mirror_of(origin, tmp_path / "repo"), "cam-17", author_email="cam-17@edge.example")
    oid = writer.commit("phase: Ready\n", "Ready")
    assert oid is not None
    commit = writer.repo[oid].peel(pygit2.Commit)
    for who in (commit.author, commit.committer):
        assert (who.name, who.email) == ("cam-17", "cam-17@edge.example")


def test_queued_commits_are_pushed_in_order(origin: Path, tmp_path: Path) -> None:
    writer = StatusWriter(mirror_of(origin, tmp_path / "repo"), "dev1")
    for p in ("Progressing", "Ready"):
        writer.commit(f"phase: {p}\n", p)
    assert writer.pending() == 2
    outcome = writer.push()
    assert (outcome.pushed, outcome.pending) == (True, 0)
    assert remote_log(origin, "status/dev1") == ["Ready", "Progressing"]
    writer.commit("phase: Degraded\n", "Degraded")
    assert writer.pending() == 1
    assert writer.push().pushed
    assert remote_log(origin, "status/dev1") == ["Degraded", "Ready", "Progressing"]
    assert git("--git-dir", str(origin), "show", "status/dev1:status.yaml") == "phase: Degraded"
    assert writer.push().message == "status/dev1 is up to date"


def test_history_continues_after_the_data_dir_is_lost(origin: Path, tmp_path: Path) -> None:
    before = StatusWriter(mirror_of(origin, tmp_path / "old"), "dev1")
    before.commit("phase: Ready\n", "Ready")
    before.push()
    mirror = mirror_of(origin, tmp_path / "new")
    writer = StatusWriter(mirror, "dev1")
    mirror.fetch()  # the agent's fetch brings the remote status branch along
    assert writer.previous_text() == "phase: Ready\n"
    assert writer.commit("phase: Ready\n", "same again") is None
    writer.commit("phase: Degraded\n", "Degraded")
    assert writer.push().pushed
    assert remote_log(origin, "status/dev1") == ["Degraded", "Ready"]


def test_commits_made_before_the_remote_chain_was_known_are_replayed(origin: Path, tmp_path: Path) -> None:
    before = StatusWriter(mirror_of(origin, tmp_path / "old"), "dev1")
    before.commit("phase: Ready\n", "Ready")
    before.push()
    writer = StatusWriter(mirror_of(origin, tmp_path / "new"), "dev1")  # no fetch yet: an orphan start
    writer.commit("phase: Progressing\n", "Progressing")
    writer.commit("phase: Failed\n", "Failed")
    outcome = writer.push()
    assert (outcome.pushed, outcome.pending) == (True, 0)
    assert remote_log(origin, "status/dev1") == ["Failed", "Progressing", "Ready"]


def test_fetch_returns_the_branch_tip_and_missing_branch_is_not_found(origin: Path, tmp_path: Path) -> None:
    mirror = mirror_of(origin, tmp_path / "repo")
    assert str(mirror.fetch()) == git("--git-dir", str(origin), "rev-parse", "main")
    with pytest.raises(NotFound, match="branch 'release' not found"):
        FleetMirror(tmp_path / "repo2", str(origin), branch="release").fetch()


def test_is_descendant_spots_a_rewritten_branch(origin: Path, tmp_path: Path) -> None:
    mirror = mirror_of(origin, tmp_path / "repo")
    old = mirror.fetch()
    work = tmp_path / "rewrite"
    git("clone", "-q", str(origin), str(work))
    git("commit", "-q", "--allow-empty", "-m", "next", cwd=work)
    git("push", "-q", "origin", "HEAD:main", cwd=work)
    ahead = mirror.fetch()
    assert mirror.is_descendant(ahead, old)
    assert mirror.is_descendant(old, old)
    git("commit", "-q", "--amend", "--allow-empty", "-m", "rewritten", cwd=work)
    git("push", "-q", "--force", "origin", "HEAD:main", cwd=work)
    rewritten = mirror.fetch()
    assert rewritten != ahead
    assert not mirror.is_descendant(rewritten, ahead)
    assert not mirror.is_descendant(old, ahead)

