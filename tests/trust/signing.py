"""Real SSH keys (ssh-keygen) and commits signed by the real git CLI (gpg.format=ssh), for trust tests."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Key:
    principal: str
    private: Path

    @property
    def public(self) -> str:
        return Path(f"{self.private}.pub").read_text().strip()

    def line(self, options: str = 'namespaces="git"') -> str:
        """This key's allowed_signers line."""
        return f"{self.principal} {options} {self.public}".replace("  ", " ")


def make_key(directory: Path, principal: str, keytype: str = "ed25519") -> Key:
    path = directory / principal.split("@")[0]
    bits = {"rsa": ["-b", "2048"], "ecdsa": ["-b", "256"]}.get(keytype, [])
    subprocess.run(["ssh-keygen", "-q", "-t", keytype, *bits, "-N", "", "-C", principal, "-f", str(path)],
                   check=True)
    return Key(principal, path)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    """alice (ed25519), bob (RSA), carol (ECDSA P-256), bot (ed25519, to be scoped), mallory (not allowed)."""
    d = tmp_path_factory.mktemp("keys")
    return {"alice": make_key(d, "alice@acme.example"), "bob": make_key(d, "bob@acme.example", "rsa"),
            "carol": make_key(d, "carol@acme.example", "ecdsa"), "bot": make_key(d, "rollout-bot@acme.example"),
            "mallory": make_key(d, "mallory@evil.example")}


def run_git(cwd: Path, *args: str, env: dict[str, str] | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, check=check, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def signed_commit(repo: Path, files: dict[str, str | None], message: str, key: Key | None, *,
                  date: str | None = None) -> str:
    """Write ``files`` (None deletes), commit them signed by ``key`` (unsigned when None); the new sha."""
    for rel, text in files.items():
        p = repo / rel
        if text is None:
            p.unlink()
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
    run_git(repo, "add", "-A")
    env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {}
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}", "commit", "-S"] if key else ["commit"]
    run_git(repo, *sign, "-q", "--allow-empty", "-m", message, env=env)
    return run_git(repo, "rev-parse", "HEAD").stdout.strip()


def signed_merge(repo: Path, branch: str, key: Key | None, message: str = "merge") -> str:
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}", "merge", "-S"] if key else ["merge"]
    run_git(repo, *sign, "-q", "--no-ff", "-m", message, branch)
    return run_git(repo, "rev-parse", "HEAD").stdout.strip()


def tampered(repo: Path, sha: str) -> str:
    """A copy of commit ``sha`` with its message changed and its signature kept; HEAD moves to it."""
    raw = run_git(repo, "cat-file", "commit", sha).stdout
    forged = raw.replace("\n\n", "\n\nforged: ", 1)
    new = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=repo, input=forged,
                         check=True, capture_output=True, text=True).stdout.strip()
    run_git(repo, "update-ref", "HEAD", new)
    return new


def git_verifies(repo: Path, sha: str, allowed_signers: Path) -> bool:
    """``git verify-commit`` with the same allowed_signers: the reference verdict."""
    out = run_git(repo, "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}", "verify-commit", sha, check=False)
    return out.returncode == 0
