"""The fleet repo mirror: a bare clone in the agent's data dir, fetched and pushed with pygit2.

This is the git adapter boundary: libgit2 errors become ``Transient`` (unreachable, timeout), ``AuthError``
(credentials refused, host key unknown or changed), ``NotFound`` (branch missing) or ``PushRejected``.
Messages name the URL (without any password in it), the ref and the key file; never a token.

Remote-tracking refs mirror what the server advertised at the last fetch: ``refs/heads/X`` is kept at
``refs/remotes/origin/X`` and removed when the server no longer has it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.errors import AuthError, DeadlineExceeded, NotFound, PushRejected, Transient
from reconciler.git.fetch import drop_symlinked_fetch_head, fetch_if_moved, fetch_quietly
from reconciler.git.knownhosts import verify_host_key
from reconciler.git.location import is_url
from reconciler.git.nodelay import tcp_nodelay

REMOTE = "origin"

@dataclass(frozen=True)
class GitAuth:
    ssh_key: Path | None = None  # private key file (public key at ssh_key + ".pub", else derived)
    known_hosts: Path | None = None  # verify the server's host key against this file (OpenSSH format)
    token_file: Path | None = None  # https: token read at use time, never logged
    username: str = "git"


@dataclass(frozen=True)
class PushOutcome:
    pushed: bool  # the remote now holds the local tip
    pending: int  # local commits the remote does not have yet
    message: str


def redact(url: str) -> str:
    """``url`` without any password it may carry."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def tracking_ref(ref: str) -> str:
    """``refs/heads/X`` -> ``refs/remotes/origin/X``."""
    if not ref.startswith("refs/heads/"):
        raise ValueError(f"not a branch ref: {ref}")
    return f"refs/remotes/{REMOTE}/{ref.removeprefix('refs/heads/')}"


def ref_target(repo: pygit2.Repository, name: str) -> pygit2.Oid | None:
    """The commit a direct ref points at, or None when the ref does not exist."""
    ref = repo.references.get(name)
    if ref is None:
        return None
    target = ref.resolve().target
    assert isinstance(target, pygit2.Oid)
    return target


def _normalize_url(url: str) -> str:
    if is_url(url):
        return url
    return str(Path(url).expanduser().resolve())


def _host_port(url: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(url if "://" in url else "ssh://" + url.replace(":", "/", 1))
    return parts.hostname or "", parts.port or 22


def _network_port(url: str) -> int | None:
    """The TCP port libgit2 will connect to for ``url`` (None for a local repository)."""
    if url.startswith("/") or url.startswith("file://"):
        return None
    if url.startswith(("https://", "http://")):
        parts = urllib.parse.urlsplit(url)
        return parts.port or (443 if parts.scheme == "https" else 80)
    return _host_port(url)[1]


class _Callbacks(pygit2.RemoteCallbacks):
    """Credentials, strict host key check, and the record of refs the server refused."""

    def __init__(self, url: str, auth: GitAuth) -> None:
        super().__init__()
        self.url = url
        self.auth = auth
        self.attempts = 0
        self.refused: dict[str, str] = {}
        self.accepted: set[str] = set()
        self.server_text: list[str] = []

    def credentials(self, url: str, username_from_url: str | None, allowed_types: Any) -> Any:
        self.attempts += 1
        user = username_from_url or self.auth.username
        if self.attempts > 1:  # libgit2 asks again after a refusal and would loop forever
            what = f"ssh key {self.auth.ssh_key}" if self.auth.ssh_key else f"token of {self.auth.token_file}"
            raise AuthError(f"{redact(self.url)}: the server refused {what} for user {user!r}")
        kinds = pygit2.enums.CredentialType
        if allowed_types & kinds.SSH_KEY and self.auth.ssh_key is not None:
            pub = Path(f"{self.auth.ssh_key}.pub")
            return pygit2.Keypair(user, pub if pub.exists() else None, self.auth.ssh_key, "")
        if allowed_types & kinds.USERPASS_PLAINTEXT and self.auth.token_file is not None:
            try:
                token = self.auth.token_file.read_text().strip()
            except OSError as exc:
                raise AuthError(f"cannot read token file {self.auth.token_file}: {exc.strerror}") from None
            return pygit2.UserPass(user, token)
        raise AuthError(f"{redact(self.url)}: the server asks for credentials and none are configured")

    def certificate_check(self, certificate: None, valid: bool, host: bytes) -> bool:
        # The caller's frame is pygit2's C-callback shim; its ``cert_i`` is libgit2's git_cert.  Reading it is
        # the only way to see the host key with pygit2 1.x (it passes ``certificate=None``).
        cert_i = sys._getframe(1).f_locals.get("cert_i")
        if cert_i is None or cert_i.cert_type != pygit2.C.GIT_CERT_HOSTKEY_LIBSSH2:
            if cert_i is None and self.auth.known_hosts is not None:
                raise AuthError(f"{redact(self.url)}: cannot read the server's host key to verify it")
            return valid  # TLS: libgit2 verified the chain against the system CAs
        if self.auth.known_hosts is None:
            return valid  # libgit2 checked ~/.ssh/known_hosts; unknown hosts stay refused
        hostname, port = _host_port(self.url)
        verify_host_key(int(pygit2.ffi.cast("uintptr_t", cert_i)), hostname, port, self.auth.known_hosts,
                        redact(self.url))
        return True

    def sideband_progress(self, string: str) -> None:
        self.server_text.append(string)

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.refused[refname] = message
        else:
            self.accepted.add(refname)

    def server_message(self) -> str:
        """What the server said on the side band (gitolite's DENIED lines), one line."""
        text = "".join(self.server_text)
        lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
        words = ("DENIED", "FATAL", "error", "denied", "rejected")
        wanted = [ln for ln in lines if any(w in ln for w in words)]
        return "; ".join(wanted or lines)[:500]


def _translate(exc: pygit2.GitError, url: str, what: str) -> Exception:
    text = str(exc)
    low = text.lower()
    where = redact(url)
    if "denied" in low or "permission" in low or "authenticat" in low:
        return AuthError(f"{where}: {what} refused: {text}")
    if "certificate" in low or "hostkey" in low or "host key" in low:
        return AuthError(f"{where}: {what}: server identity not verified: {text}")
    if "timed out" in low:
        return DeadlineExceeded(f"{where}: {what} timed out: {text}")
    if "does not appear to be a git repository" in low or "could not find repository" in low:
        return NotFound(f"{where}: repository not found ({text})")
    return Transient(f"{where}: {what} failed: {text}")


class FleetMirror:
    """A bare mirror of the fleet repo at ``path``, created on first use."""

    def __init__(
        self,
        path: Path,
        url: str,
        branch: str = "main",
        auth: GitAuth = GitAuth(),  # a frozen value: safe as a default
        *,
        timeout: float = 60,
    ) -> None:
        # libgit2 does not fsync by default; a power cut could leave refs pointing at missing objects.
        pygit2.settings.enable_fsync_gitdir(True)
        self.path = Path(path)
        self.url = _normalize_url(url)
        self.branch = branch
        self.auth = auth
        self.timeout = timeout
        self._tracked: list[str] = []
        if (self.path / "HEAD").exists():
            self.repo = pygit2.Repository(str(self.path))
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.repo = pygit2.init_repository(str(self.path), bare=True)
        drop_symlinked_fetch_head(self.path)
        if REMOTE in self.repo.remotes.names():
            if self.repo.remotes[REMOTE].url != self.url:
                self.repo.remotes.set_url(REMOTE, self.url)
        else:
            self.repo.remotes.create(REMOTE, self.url, f"+refs/heads/*:refs/remotes/{REMOTE}/*")

    @property
    def branch_ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def track(self, ref: str) -> None:
        """Fetch ``ref`` (a branch) along with the fleet branch on every ``fetch``."""
        tracking_ref(ref)
        if ref not in self._tracked:
            self._tracked.append(ref)

    def remote_tip(self, ref: str) -> pygit2.Oid | None:
        """The tip of ``ref`` the server advertised at the last fetch or push."""
        return ref_target(self.repo, tracking_ref(ref))

    def fetch(self) -> pygit2.Oid:
        """Fetch the fleet branch (and tracked refs) to ``refs/remotes/origin/``; return the branch tip."""
        tips = self.fetch_refs([self.branch_ref, *self._tracked])
        tip = tips[self.branch_ref]
        if tip is None:
            raise NotFound(f"{redact(self.url)}: branch {self.branch!r} not found")
        return tip

    def fetch_refs(self, refs: Sequence[str]) -> dict[str, pygit2.Oid | None]:
        """Fetch branch refs (a second connection only when one moved); None for those the server does not
        have.  Nothing on disk changes when nothing moved."""
        remote = self._remote()
        try:
            with self._connection():
                heads = fetch_if_moved(remote, {r: tracking_ref(r) for r in refs},
                                       lambda: _Callbacks(self.url, self.auth), self.remote_tip, self.repo)
        except pygit2.GitError as exc:
            raise _translate(exc, self.url, "fetch") from None
        result: dict[str, pygit2.Oid | None] = {}
        for ref in refs:
            oid = heads.get(ref)
            self._set_tracking(ref, oid)
            result[ref] = oid
        return result

    def fetch_from(self, url: str) -> pygit2.Oid:
        """Fetch the fleet branch from a read-only mirror at ``url`` (same credentials and host-key file) to
        ``refs/mirrors/<id>/<branch>``, leaving origin's tracking refs alone; return the mirror's tip."""
        url = _normalize_url(url)
        self._apply_timeouts()
        key = hashlib.sha256(redact(url).encode()).hexdigest()[:12]
        local = f"refs/mirrors/{key}/{self.branch}"
        port = _network_port(url)
        try:
            remote = self.repo.remotes.create_anonymous(url)
            with contextlib.nullcontext() if port is None else tcp_nodelay(port):
                heads = fetch_if_moved(remote, {self.branch_ref: local}, lambda: _Callbacks(url, self.auth),
                                       lambda _ref: ref_target(self.repo, local), self.repo)
        except pygit2.GitError as exc:
            raise _translate(exc, url, "fetch") from None
        tip = heads.get(self.branch_ref)
        if tip is None or tip not in self.repo:
            raise NotFound(f"{redact(url)}: branch {self.branch!r} not found")
        return tip

    def fetch_all(self) -> None:
        """Fetch every branch the server advertises (the remote's own refspec), pruning deleted ones."""
        remote = self._remote()
        try:
            with self._connection():
                fetch_quietly(remote, None, _Callbacks(self.url, self.auth), pygit2.enums.FetchPrune.PRUNE)
        except pygit2.GitError as exc:
            raise _translate(exc, self.url, "fetch") from None

    def fetch_objects(self, url: str, refs: Sequence[str]) -> dict[str, pygit2.Oid | None]:
        """Fetch the objects of branch ``refs`` from another repository (a local path: an air-gap bundle's
        content) without touching any ref; the caller decides which refs move.  None for refs it lacks."""
        remote = self.repo.remotes.create_anonymous(url)
        try:
            heads = {h.name: h.oid for h in remote.list_heads(callbacks=_Callbacks(url, self.auth))}
            wanted = [r for r in refs if r in heads]
            if wanted:
                fetch_quietly(remote, wanted, _Callbacks(url, self.auth), pygit2.enums.FetchPrune.NO_PRUNE)
        except pygit2.GitError as exc:
            raise _translate(exc, url, "fetch") from None
        return {r: heads.get(r) for r in refs}

    def _remote(self) -> pygit2.Remote:
        self._apply_timeouts()
        return self.repo.remotes[REMOTE]

    def _connection(self) -> contextlib.AbstractContextManager[object]:
        port = _network_port(self.url)
        return contextlib.nullcontext() if port is None else tcp_nodelay(port)

    def is_descendant(self, new: pygit2.Oid, old: pygit2.Oid) -> bool:
        """True when ``new`` is ``old`` or has it in its history (False when either is unknown here)."""
        if new == old:
            return True
        try:
            return bool(self.repo.descendant_of(new, old))
        except (KeyError, ValueError, pygit2.GitError):
            return False

    def push_status(self, device: str) -> PushOutcome:
        ref = f"refs/heads/status/{device}"
        local = self.repo.references.get(ref)
        if local is None:
            return PushOutcome(pushed=True, pending=0, message=f"no status commits for {device} yet")
        self.push_ref(ref, ref)
        return PushOutcome(pushed=True, pending=0, message=f"pushed {ref} at {str(local.target)[:12]}")

    def push_ref(self, local_ref: str, remote_ref: str) -> None:
        """Push ``local_ref`` to ``remote_ref`` (no force).  A refusal raises PushRejected with the server's
        words; pygit2 does not raise for refused refs, so the callback's verdict is what counts."""
        local = self.repo.references.get(local_ref)
        if local is None:
            raise NotFound(f"no local ref {local_ref} to push")
        remote = self._remote()
        callbacks = _Callbacks(self.url, self.auth)
        try:
            with self._connection():
                remote.push([f"{local_ref}:{remote_ref}"], callbacks=callbacks)
        except pygit2.GitError as exc:
            text = str(exc).lower()
            if "fastforward" in text or "fast-forward" in text or "not present locally" in text:
                raise PushRejected(
                    f"{redact(self.url)}: push of {remote_ref} refused: the remote has commits this device "
                    "does not (non-fast-forward)"
                ) from None
            raise _translate(exc, self.url, f"push of {remote_ref}") from None
        if remote_ref in callbacks.refused or remote_ref not in callbacks.accepted:
            said = callbacks.server_message()
            reason = callbacks.refused.get(remote_ref, "no confirmation from the server")
            raise PushRejected(
                f"{redact(self.url)}: the server refused the push of {remote_ref}: {reason}"
                + (f" ({said})" if said else "")
            )
        if remote_ref.startswith("refs/heads/"):
            self._set_tracking(remote_ref, ref_target(self.repo, local_ref))

    def set_tracking(self, ref: str, oid: pygit2.Oid | None) -> None:
        """Record ``oid`` as the server's tip of ``ref`` (a bundle carried it: the sneakernet's fetch)."""
        self._set_tracking(ref, oid)

    def _set_tracking(self, ref: str, oid: pygit2.Oid | None) -> None:
        name = tracking_ref(ref)
        current = self.repo.references.get(name)
        if oid is None:
            if current is not None:
                current.delete()
        elif current is None or current.target != oid:
            self.repo.references.create(name, oid, force=True)

    def _apply_timeouts(self) -> None:
        # process-wide libgit2 settings, in milliseconds; set before each operation of this mirror
        ms = max(1, int(self.timeout * 1000))
        pygit2.settings.server_connect_timeout = ms
        pygit2.settings.server_timeout = ms

    def commits_between(self, tip: pygit2.Oid, hide: Iterable[pygit2.Oid]) -> list[pygit2.Commit]:
        """Commits reachable from ``tip`` but not from any of ``hide``, oldest first."""
        walker = self.repo.walk(tip, pygit2.enums.SortMode.TOPOLOGICAL | pygit2.enums.SortMode.REVERSE)
        for oid in hide:
            if oid in self.repo:
                walker.hide(oid)
        return list(walker)
