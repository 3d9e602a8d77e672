"""A real git server on loopback: Debian's gitolite3 behind openssh-server's sshd.

``run_git_server`` is free of pytest so that ``bench/`` and the demo script can use it too; the fixture
``git_server`` (module scope: startup takes a second or two) wraps it.

Layout.  gitolite needs a unix user of its own (``gitfleet``, created idempotently, password ``*`` so that
sshd does not treat the account as locked).  Each run gets its own gitolite home, a fresh directory under
the user's home (the per-test ``workdir`` of pytest is root-only, so the gitolite user could not enter it);
it is removed at teardown.  sshd runs as root on 127.0.0.1 with its own config, host key, pid file and
``authorized_keys`` file; every key line forces ``gitolite-shell <user>`` with ``HOME`` pointing at this
run's gitolite home, so concurrent runs never share repositories.  Root's own ssh keys and ``/etc/ssh``
are never touched.

Access rules: the admin writes everything; each device reads ``fleet`` and may write only
``refs/heads/status/<its name>``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GIT_USER = "gitfleet"
GIT_HOME = Path("/var/lib/gitfleet")
GITOLITE_SHELL = "/usr/share/gitolite3/gitolite-shell"
SSHD = "/usr/sbin/sshd"


def ensure_git_user() -> pwd.struct_passwd:
    """Create the gitolite unix user if missing (idempotent; safe when two runs race)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(GIT_USER)
    subprocess.run(
        ["useradd", "--system", "--user-group", "--home-dir", str(GIT_HOME), "--create-home",
         "--shell", "/bin/sh", GIT_USER],
        check=False, capture_output=True,
    )
    entry = pwd.getpwnam(GIT_USER)  # raises if a racing run did not create it either
    # "!" in the shadow file makes sshd (without PAM) refuse the account as locked; "*" only forbids passwords
    subprocess.run(["usermod", "-p", "*", GIT_USER], check=True, capture_output=True)
    return entry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )


class _Sshd:
    """The sshd process; restartable on the same port so tests can take the server offline and back."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config = config
        self.log = log
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"sshd exited at start; see {self.log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not answer on port {self.port}; see {self.log}")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass(frozen=True)
class GitServer:
    port: int
    known_hosts: Path
    keys_dir: Path
    gitolite_home: Path
    _sshd: _Sshd = field(repr=False, compare=False)

    def url(self, repo: str = "fleet") -> str:
        return f"ssh://{GIT_USER}@127.0.0.1:{self.port}/{repo}"

    @property
    def sshd_pid(self) -> int | None:
        """The listening sshd (its children's CPU time accrues to it as they exit: the server's cost)."""
        return self._sshd.proc.pid if self._sshd.proc is not None else None

    def key(self, user: str) -> Path:
        path = self.keys_dir / user
        if not path.exists():
            raise KeyError(f"no key for git user {user!r}")
        return path

    def ssh_command(self, user: str) -> str:
        """A GIT_SSH_COMMAND for the real git client acting as ``user`` (no ssh config, strict host key)."""
        return " ".join(
            shlex.quote(a)
            for a in (
                "ssh", "-F", "/dev/null", "-i", str(self.key(user)), "-o", "IdentitiesOnly=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            )
        )

    def git(
        self, user: str, *args: str, cwd: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the git CLI as ``user`` against this server."""
        env = {**os.environ, "GIT_SSH_COMMAND": self.ssh_command(user)}
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=check, capture_output=True, text=True)

    def commit_files(self, workdir: Path, files: Mapping[str, str | None], message: str,
                     branch: str = "main", repo: str = "fleet", user: str = "admin") -> str:
        """Commit ``files`` (path -> text, None deletes) on ``branch`` as ``user``, push, return the sha."""
        clone = workdir / f"clone-{user}-{repo}"
        if not clone.exists():
            self.git(user, "clone", "-q", self.url(repo), str(clone))
        self.git(user, "fetch", "-q", "origin", cwd=clone)
        remote_has = self.git(user, "rev-parse", "-q", "--verify", f"origin/{branch}", cwd=clone, check=False)
        if remote_has.returncode == 0:
            self.git(user, "checkout", "-q", "-B", branch, f"origin/{branch}", cwd=clone)
        else:
            self.git(user, "checkout", "-q", "--orphan", branch, cwd=clone)
        for rel, text in files.items():
            target = clone / rel
            if text is None:
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git(user, "add", "-A", ".", cwd=clone)
        self.git(user, "commit", "-q", "--allow-empty", "-m", message, cwd=clone)
        self.git(user, "push", "-q", "origin", f"HEAD:refs/heads/{branch}", cwd=clone)
        return self.git(user, "rev-parse", "HEAD", cwd=clone).stdout.strip()

    def stop(self) -> None:
        """Take the server offline (connections are refused) until ``start``."""
        self._sshd.stop()

    def start(self) -> None:
        self._sshd.start()


def _gitolite_conf(repo: str, devices: Sequence[str], status_repo: str | None = None) -> str:
    lines = ["repo gitolite-admin", "    RW+ = admin", "", f"repo {repo}", "    RW+ = admin"]
    if devices:
        lines.append(f"    R = {' '.join(devices)}")
    rules = [f"    RW+ refs/heads/status/{d}$ = {d}" for d in devices]
    if status_repo is None:
        return "\n".join([*lines, *rules]) + "\n"
    # status branches in a repository of their own: the fleet repo is read-only for devices
    return "\n".join([*lines, "", f"repo {status_repo}", "    RW+ = admin", *rules]) + "\n"


def _sshd_config(workdir: Path, port: int, authorized_keys: Path, home: Path | None = None) -> str:
    return "\n".join(
        ([f"SetEnv HOME={home}"] if home is not None else []) + [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {workdir / 'ssh_host_ed25519_key'}",
            f"PidFile {workdir / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized_keys}",
            "AuthorizedKeysCommand none",
            f"AllowUsers {GIT_USER}",
            "PermitRootLogin no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "PrintMotd no",
            "StrictModes yes",
            "MaxStartups 100",
            "LogLevel VERBOSE",
            "",
        ]
    )


@contextlib.contextmanager
def run_git_server(
    workdir: Path, devices: Sequence[str] = ("dev1", "dev2"), repo: str = "fleet", status_repo: str | None = None,
    gitolite_keys: bool = False,
) -> Iterator[GitServer]:
    """Start gitolite behind sshd on 127.0.0.1:<random port>; everything lives under ``workdir`` except the
    gitolite home (see the module docstring).  The repo ``repo`` exists and is empty; so does ``status_repo``
    when given, and then the devices write their status branches there and only read ``repo``.

    ``gitolite_keys``: sshd reads the ``authorized_keys`` that gitolite itself maintains from ``keydir/`` (as a
    packaged gitolite does), with ``HOME`` set to this run's gitolite home by sshd's ``SetEnv``; a key pushed to
    gitolite-admin then works at once, and one removed stops working."""
    user = ensure_git_user()
    workdir.mkdir(parents=True, exist_ok=True)
    # sshd's privilege-separation dir, normally made at boot by the service unit
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    runs = GIT_HOME / "runs"
    runs.mkdir(exist_ok=True)
    os.chown(runs, user.pw_uid, user.pw_gid)
    home = Path(tempfile.mkdtemp(prefix="gitolite-", dir=runs))
    sshd: _Sshd | None = None
    try:
        os.chown(home, user.pw_uid, user.pw_gid)
        keys = workdir / "keys"
        keys.mkdir(exist_ok=True)
        names = ["admin", *devices]
        for name in names:
            if not (keys / name).exists():
                _keygen(keys / name, f"{name}@fleet-test")
        _keygen(workdir / "ssh_host_ed25519_key", "host@fleet-test")

        def as_git(*cmd: str) -> None:
            env = {"HOME": str(home), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
            res = subprocess.run(list(cmd), cwd=home, env=env, user=user.pw_uid, group=user.pw_gid,
                                 capture_output=True, text=True)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")

        admin_pub = home / "admin.pub"
        shutil.copy(keys / "admin.pub", admin_pub)
        os.chown(admin_pub, user.pw_uid, user.pw_gid)
        as_git("gitolite", "setup", "-pk", str(admin_pub))
        keydir = home / ".gitolite" / "keydir"
        for name in devices:
            shutil.copy(keys / f"{name}.pub", keydir / f"{name}.pub")
        (home / ".gitolite" / "conf" / "gitolite.conf").write_text(_gitolite_conf(repo, devices, status_repo))
        for p in [keydir, *keydir.iterdir(), home / ".gitolite" / "conf" / "gitolite.conf"]:
            os.chown(p, user.pw_uid, user.pw_gid)
        as_git("gitolite", "setup")  # compiles the rules and creates the repo
        # so that clones check out main (git init's default branch may be master)
        for name in [repo, *([status_repo] if status_repo else [])]:
            bare = home / "repositories" / f"{name}.git"
            as_git("git", "--git-dir", str(bare), "symbolic-ref", "HEAD", "refs/heads/main")

        authorized = home / "authorized_keys"
        options = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty"
        authorized.write_text(
            "".join(
                f'command="HOME={home} {GITOLITE_SHELL} {name}",{options} '
                f'{(keys / f"{name}.pub").read_text().strip()}\n'
                for name in names
            )
        )
        os.chown(authorized, user.pw_uid, user.pw_gid)
        authorized.chmod(0o600)

        host_pub = (workdir / "ssh_host_ed25519_key.pub").read_text().split()
        for _attempt in range(5):
            port = _free_port()
            config = workdir / "sshd_config"
            if gitolite_keys:
                config.write_text(_sshd_config(workdir, port, home / ".ssh" / "authorized_keys", home))
            else:
                config.write_text(_sshd_config(workdir, port, authorized))
            sshd = _Sshd(config, workdir / "sshd.log", port)
            try:
                sshd.start()
                break
            except RuntimeError:
                sshd = None  # most likely the port was taken between probing and binding
        if sshd is None:
            raise RuntimeError(f"sshd would not start; see {workdir / 'sshd.log'}")
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {host_pub[0]} {host_pub[1]}\n")
        with contextlib.suppress(FileExistsError):
            (workdir / "gitolite-home").symlink_to(home)
        yield GitServer(sshd.port, known_hosts, keys, home, sshd)
    finally:
        if sshd is not None:
            sshd.stop()
        shutil.rmtree(home, ignore_errors=True)


try:
    import pytest
except ImportError:  # pragma: no cover - run_git_server is usable without pytest
    pass
else:

    @pytest.fixture(scope="module")
    def git_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
        """gitolite over ssh: users admin, dev1, dev2 and an empty repo ``fleet`` (one per test module)."""
        with run_git_server(tmp_path_factory.mktemp("gitserver")) as server:
            yield server

    @pytest.fixture(scope="module")
    def gitolite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
        """Like ``git_server``, but sshd trusts the keys gitolite-admin registers (enrolment adds and removes them)."""
        with run_git_server(tmp_path_factory.mktemp("gitolite"), gitolite_keys=True) as server:
            yield server
