"""The status branch: ``status.yaml`` committed on ``refs/heads/status/<device>``, and its offline queue.

The branch is an orphan chain that holds only ``status.yaml``; it shares no history with the fleet branch.
Each commit's parent is the previous status commit, so the branch is the audit log of what the device ran.
Commits are made locally first (the queue is simply the local branch ahead of the remote one) and pushed in
order when the link allows.  A device that lost its data dir continues the remote chain: the first commit
takes the remote tip as parent, and commits made before the remote tip was known are replayed on top of it
before pushing, so the server never sees a rewind.
"""

from __future__ import annotations

import time

import pygit2

from reconciler.errors import DiskFull, PushRejected, Transient
from reconciler.git.mirror import FleetMirror, PushOutcome, ref_target, tracking_ref

__all__ = ["PushOutcome", "StatusWriter"]

STATUS_FILE = "status.yaml"


class StatusWriter:
    def __init__(self, mirror: FleetMirror, device: str, author_email: str | None = None) -> None:
        self.mirror = mirror
        self.device = device
        self.email = author_email or f"{device}@devices.fleet.invalid"
        self.ref = f"refs/heads/status/{device}"
        mirror.track(self.ref)  # the agent's regular fetch keeps our view of the remote chain fresh

    @property
    def repo(self) -> pygit2.Repository:
        return self.mirror.repo

    def _local_tip(self) -> pygit2.Oid | None:
        return ref_target(self.repo, self.ref)

    def _base(self) -> pygit2.Oid | None:
        """The commit the next status commit goes on: our tip, else the remote's (after a data-dir loss)."""
        tip = self._local_tip()
        if tip is None:
            tip = self.mirror.remote_tip(self.ref)
            if tip is not None and tip not in self.repo:
                tip = None
        return tip

    def previous_text(self) -> str | None:
        base = self._base()
        if base is None:
            return None
        tree = self.repo[base].peel(pygit2.Tree)
        try:
            entry = tree[STATUS_FILE]
        except KeyError:
            return None
        return entry.data.decode("utf-8") if isinstance(entry, pygit2.Blob) else None

    def commit(self, text: str, message: str) -> pygit2.Oid | None:
        """Commit ``text`` as status.yaml; None when it equals the previous status.

        libgit2 writes the objects, then moves the ref with a lock file and a rename (fsynced, see
        FleetMirror), so a power cut leaves either the old or the new tip, never a broken ref.  A full disk
        is ``DiskFull``: the previous tip stays, and the next pass commits again."""
        if text == self.previous_text():
            return None
        try:
            return self._commit(text, message)
        except pygit2.GitError as exc:
            if "no space left" in str(exc).lower():
                raise DiskFull(f"{self.repo.path}: no space left on device for the status commit") from None
            raise

    def _commit(self, text: str, message: str) -> pygit2.Oid:
        base = self._base()
        builder = self.repo.TreeBuilder()
        builder.insert(STATUS_FILE, self.repo.create_blob(text.encode("utf-8")), pygit2.enums.FileMode.BLOB)
        tree = builder.write()
        now = int(time.time())
        signature = pygit2.Signature(self.device, self.email, now, 0)
        parents = [] if base is None else [base]
        if self._local_tip() is None and base is not None:
            # libgit2 refuses to update a ref whose first parent is not its current tip, and there is no tip
            oid = self.repo.create_commit(None, signature, signature, message, tree, parents)
            self.repo.references.create(self.ref, oid)
        else:
            oid = self.repo.create_commit(self.ref, signature, signature, message, tree, parents)
        return oid

    def pending(self) -> int:
        """Local status commits the remote does not have yet."""
        tip = self._local_tip()
        if tip is None:
            return 0
        remote = self.mirror.remote_tip(self.ref)
        return len(self.mirror.commits_between(tip, [] if remote is None else [remote]))

    def push(self) -> PushOutcome:
        """Push the queued commits in order (one push carries them all).  Offline: an outcome that says so,
        no raise.  Refused by the server: PushRejected."""
        waiting = self.pending()
        if waiting == 0:
            return PushOutcome(pushed=True, pending=0, message=f"status/{self.device} is up to date")
        try:
            self._continue_remote_chain()
            try:
                return self._push(waiting)
            except PushRejected:
                # someone (an earlier life of this device) moved the remote chain since our last fetch
                before = self.mirror.remote_tip(self.ref)
                self.mirror.fetch_refs([self.ref])
                if self.mirror.remote_tip(self.ref) == before or not self._continue_remote_chain():
                    raise
                return self._push(self.pending())
        except Transient as exc:
            left = self.pending()
            return PushOutcome(pushed=False, pending=left, message=f"offline, {left} queued: {exc}")

    def _push(self, waiting: int) -> PushOutcome:
        self.mirror.push_status(self.device)
        message = f"pushed {waiting} status commit(s) to status/{self.device}"
        return PushOutcome(pushed=True, pending=0, message=message)

    def _continue_remote_chain(self) -> bool:
        """Replay local-only commits on the remote tip when our chain lacks it; True if it did."""
        tip = self._local_tip()
        remote = self.mirror.remote_tip(self.ref)
        if tip is None or remote is None or remote not in self.repo or self.mirror.is_descendant(tip, remote):
            return False
        parent = remote
        for commit in self.mirror.commits_between(tip, [remote]):
            parent = self.repo.create_commit(
                None, commit.author, commit.committer, commit.message, commit.tree_id, [parent]
            )
        self.repo.references.create(self.ref, parent, force=True)
        return True


def remote_status_ref(device: str) -> str:
    """Where the mirror keeps the server's view of a device's status branch."""
    return tracking_ref(f"refs/heads/status/{device}")
