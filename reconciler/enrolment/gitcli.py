"""The admin side's git: the git CLI in a temporary clone, so that the operator's identity, ssh config and
commit signing (``commit.gpgsign``, ``gpg.format=ssh``) apply to what ``device enroll`` commits.

Errors are translated here: a refused login is ``AuthError``, a refused ref ``PushRejected``, anything else
``Transient``.  Messages carry git's own words (URLs redacted), never key material.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from reconciler.errors import AuthError, NotFound, PushRejected, Transient
from reconciler.git.mirror import redact

TIMEOUT = 120


class Clone:
    def __init__(self, url: str, workdir: Path, branch: str | None = None, ssh_key: Path | None = None,
                 known_hosts: Path | None = None) -> None:
        self.url = url
        self.dir = workdir
        self.branch = branch
        env = dict(os.environ)
        if ssh_key is not None or known_hosts is not None:
            cmd = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
            if ssh_key is not None:
                cmd += ["-i", str(ssh_key), "-o", "IdentitiesOnly=yes"]
            if known_hosts is not None:
                cmd += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
            env["GIT_SSH_COMMAND"] = " ".join(shlex.quote(c) for c in cmd)
        env["GIT_TERMINAL_PROMPT"] = "0"
        self.env: Mapping[str, str] = env
        args = ["clone", "-q", "--depth", "1"]
        if branch:
            args += ["--branch", branch]
        self._git(*args, url, str(workdir), cwd=None, what="clone")
        if branch is None:
            self.branch = self._git("rev-parse", "--abbrev-ref", "HEAD", what="branch").strip()

    def write(self, rel: str, text: str | None) -> None:
        path = self.dir / rel
        if text is None:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def read(self, rel: str) -> str | None:
        path = self.dir / rel
        return path.read_text() if path.is_file() else None

    def commit_and_push(self, message: str) -> bool:
        """False when there was nothing to commit."""
        self._git("add", "-A", what="add")
        if not self._git("status", "--porcelain", what="status").strip():
            return False
        self._git("commit", "-q", "-m", message, what="commit")
        self._git("push", "-q", "origin", f"HEAD:refs/heads/{self.branch}", what=f"push to {self.branch}")
        return True

    def _git(self, *args: str, cwd: Path | str | None = "", what: str) -> str:
        where = self.dir if cwd == "" else cwd
        try:
            res = subprocess.run(["git", *args], cwd=where, env=dict(self.env), capture_output=True, text=True,
                                 timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise Transient(f"{redact(self.url)}: git {what} took more than {TIMEOUT}s") from None
        if res.returncode == 0:
            return res.stdout
        text = " ".join(res.stderr.split())[:600]
        low = text.lower()
        label = f"{redact(self.url)}: git {what} failed: {text}"
        if "permission denied" in low or "host key verification failed" in low or ("denied" in low and what == "clone"):
            raise AuthError(label)
        if "does not appear to be a git repository" in low or ("not found" in low and what == "clone"):
            raise NotFound(label)
        if what.startswith("push") and ("rejected" in low or "denied" in low or "hook declined" in low):
            raise PushRejected(label)
        raise Transient(label)
