"""The fleet mirror against a real gitolite over ssh (pygit2 and the git CLI), plus known_hosts parsing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pygit2
import pytest

from reconciler.errors import AuthError, DeadlineExceeded, NotFound, PushRejected, Transient
from reconciler.git.knownhosts import known_host_keys
from reconciler.git.mirror import FleetMirror, GitAuth, redact
from reconciler.status.writer import StatusWriter
from tests.services.gitserver import GIT_USER, GitServer

FLEET = {"fleet.yaml": "apiVersion: fleet/v1\nkind: Fleet\n", "devices/dev1.yaml": "kind: Device\n"}


@pytest.fixture(scope="module")
def seeded(git_server: GitServer, tmp_path_factory: pytest.TempPathFactory) -> GitServer:
    git_server.commit_files(tmp_path_factory.mktemp("admin"), FLEET, "fleet: first devices")
    return git_server


def device_mirror(server: GitServer, where: Path, device: str = "dev1", **kw: object) -> FleetMirror:
    auth = GitAuth(ssh_key=server.key(device), known_hosts=server.known_hosts, username=GIT_USER)
    return FleetMirror(where, server.url(), auth=auth, timeout=10, **kw)  # type: ignore[arg-type]


def remote_heads(server: GitServer) -> dict[str, str]:
    out = server.git("admin", "ls-remote", server.url()).stdout
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


@pytest.mark.integration
def test_device_fetches_over_ssh_with_its_key(seeded: GitServer, tmp_path: Path) -> None:
    mirror = device_mirror(seeded, tmp_path / "repo")
    tip = mirror.fetch()
    assert str(tip) == remote_heads(seeded)["refs/heads/main"]
    tree = mirror.repo[tip].peel(pygit2.Tree)
    blob = mirror.repo.revparse_single(f"{tip}:devices/dev1.yaml")
    assert isinstance(blob, pygit2.Blob) and blob.data == b"kind: Device\n"
    assert "fleet.yaml" in tree
    assert mirror.repo.references["refs/remotes/origin/main"].target == tip
    assert mirror.fetch() == tip  # the second fetch reuses the bare clone


@pytest.mark.integration
def test_device_pushes_its_own_status_branch(seeded: GitServer, tmp_path: Path) -> None:
    mirror = device_mirror(seeded, tmp_path / "repo")
    writer = StatusWriter(mirror, "dev1")
    mirror.fetch()
    oid = writer.commit("device: dev1\nphase: Ready\n", "dev1: Ready")
    outcome = writer.push()
    assert (outcome.pushed, outcome.pending) == (True, 0)
    assert remote_heads(seeded)["refs/heads/status/dev1"] == str(oid)


@pytest.mark.integration
def test_server_refuses_main_and_other_devices_status(seeded: GitServer, tmp_path: Path) -> None:
    mirror = device_mirror(seeded, tmp_path / "repo")
    main = mirror.fetch()
    repo = mirror.repo
    me = pygit2.Signature("dev1", "dev1@devices")
    parent = repo[main].peel(pygit2.Commit)
    sneaky = repo.create_commit("refs/heads/sneaky", me, me, "edit desired state", parent.tree_id, [main])
    before = remote_heads(seeded)

    with pytest.raises(PushRejected, match=r"refs/heads/main.*DENIED"):
        mirror.push_ref("refs/heads/sneaky", "refs/heads/main")
    with pytest.raises(PushRejected, match=r"refs/heads/status/dev2.*DENIED"):
        mirror.push_ref("refs/heads/sneaky", "refs/heads/status/dev2")

    writer = StatusWriter(mirror, "dev2")  # dev1's key, writing as if it were dev2
    writer.commit("device: dev2\n", "impersonation")
    with pytest.raises(PushRejected, match="status/dev2"):
        writer.push()
    assert writer.pending() == 1

    after = remote_heads(seeded)
    assert after["refs/heads/main"] == before["refs/heads/main"] != str(sneaky)
    assert after.get("refs/heads/status/dev2") == before.get("refs/heads/status/dev2")


@pytest.mark.integration
def test_git_cli_sees_the_same_rules(seeded: GitServer, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    seeded.git("dev2", "clone", "-q", seeded.url(), str(clone))
    assert (clone / "fleet.yaml").read_text() == FLEET["fleet.yaml"]
    seeded.git("dev2", "commit", "-q", "--allow-empty", "-m", "x", cwd=clone)
    denied = seeded.git("dev2", "push", "origin", "HEAD:refs/heads/main", cwd=clone, check=False)
    assert denied.returncode != 0
    assert "W refs/heads/main fleet dev2 DENIED" in denied.stderr
    allowed = seeded.git("dev2", "push", "origin", "HEAD:refs/heads/status/dev2", cwd=clone, check=False)
    assert allowed.returncode == 0, allowed.stderr
    seeded.git("admin", "push", "-q", "origin", ":refs/heads/status/dev2", cwd=clone)  # leave no trace


@pytest.mark.integration
def test_offline_commits_queue_and_are_pushed_in_order(seeded: GitServer, tmp_path: Path) -> None:
    mirror = device_mirror(seeded, tmp_path / "repo")
    writer = StatusWriter(mirror, "dev1")
    mirror.fetch()
    writer.commit("phase: Progressing\n", "before the outage")
    assert writer.push().pushed
    seeded.stop()
    try:
        with pytest.raises(Transient, match="Connection refused"):
            mirror.fetch()
        for phase in ("Degraded", "Failed"):
            writer.commit(f"phase: {phase}\n", f"offline: {phase}")
        outcome = writer.push()
        assert (outcome.pushed, outcome.pending) == (False, 2)
        assert outcome.message.startswith("offline, 2 queued")
    finally:
        seeded.start()
    outcome = writer.push()
    assert (outcome.pushed, outcome.pending) == (True, 0)
    admin_view = _admin_clone(seeded, tmp_path)
    log = seeded.git("admin", "log", "--format=%s", "-3", "refs/heads/status/dev1", cwd=admin_view)
    assert log.stdout.splitlines() == ["offline: Failed", "offline: Degraded", "before the outage"]


def _admin_clone(server: GitServer, tmp_path: Path) -> Path:
    clone = tmp_path / "admin-view"
    server.git("admin", "clone", "-q", "--mirror", server.url(), str(clone))
    return clone


@pytest.mark.integration
def test_wrong_port_is_transient(seeded: GitServer, tmp_path: Path) -> None:
    port = closed_port()
    auth = GitAuth(ssh_key=seeded.key("dev1"), known_hosts=seeded.known_hosts, username=GIT_USER)
    url = f"ssh://{GIT_USER}@127.0.0.1:{port}/fleet"
    with pytest.raises(Transient, match=f"127.0.0.1:{port}/fleet: fetch failed"):
        FleetMirror(tmp_path / "repo", url, auth=auth, timeout=5).fetch()


def test_a_server_that_never_answers_hits_the_deadline(tmp_path: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever speaks ssh
        url = f"ssh://{GIT_USER}@127.0.0.1:{silent.getsockname()[1]}/fleet"
        mirror = FleetMirror(tmp_path / "repo", url, auth=GitAuth(known_hosts=tmp_path / "kh"), timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="fetch timed out"):
            mirror.fetch()
        assert time.monotonic() - started < 5


@pytest.mark.integration
def test_public_key_is_derived_without_a_pub_file(seeded: GitServer, tmp_path: Path) -> None:
    lone = tmp_path / "id_dev1"
    shutil.copy(seeded.key("dev1"), lone)
    lone.chmod(0o600)
    auth = GitAuth(ssh_key=lone, known_hosts=seeded.known_hosts, username=GIT_USER)
    assert str(FleetMirror(tmp_path / "repo", seeded.url(), auth=auth).fetch()) == remote_heads(seeded)[
        "refs/heads/main"
    ]


@pytest.mark.integration
def test_wrong_host_key_is_an_auth_error(seeded: GitServer, tmp_path: Path) -> None:
    other = tmp_path / "impostor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key_type, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{seeded.port} {key_type} {blob}\n")
    auth = GitAuth(ssh_key=seeded.key("dev1"), known_hosts=known, username=GIT_USER)
    with pytest.raises(AuthError, match=r"host key SHA256:\S+ of \[127.0.0.1\]:\d+ does not match"):
        FleetMirror(tmp_path / "a", seeded.url(), auth=auth).fetch()

    known.write_text(seeded.known_hosts.read_text().replace(f"[127.0.0.1]:{seeded.port}", "[127.0.0.1]:1"))
    with pytest.raises(AuthError, match="is not listed in"):
        FleetMirror(tmp_path / "b", seeded.url(), auth=auth).fetch()


@pytest.mark.integration
def test_unknown_client_key_is_an_auth_error(seeded: GitServer, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    auth = GitAuth(ssh_key=stranger, known_hosts=seeded.known_hosts, username=GIT_USER)
    with pytest.raises(AuthError, match=f"refused ssh key {stranger}"):
        FleetMirror(tmp_path / "repo", seeded.url(), auth=auth, timeout=10).fetch()


@pytest.mark.integration
def test_missing_branch_is_not_found(seeded: GitServer, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="branch 'release' not found"):
        device_mirror(seeded, tmp_path / "repo", branch="release").fetch()


@pytest.mark.integration
def test_a_force_pushed_main_is_not_a_descendant(seeded: GitServer, tmp_path: Path) -> None:
    mirror = device_mirror(seeded, tmp_path / "repo")
    applied = mirror.fetch()
    work = tmp_path / "admin"
    forward = seeded.commit_files(work, {"groups/cams.yaml": "kind: Group\n"}, "add a group")
    assert str(new := mirror.fetch()) == forward
    assert mirror.is_descendant(new, applied)
    clone = work / "clone-admin-fleet"
    seeded.git("admin", "reset", "-q", "--hard", str(applied), cwd=clone)
    seeded.git("admin", "commit", "-q", "--allow-empty", "-m", "rewritten history", cwd=clone)
    seeded.git("admin", "push", "-q", "--force", "origin", "HEAD:refs/heads/main", cwd=clone)
    rewound = mirror.fetch()
    assert not mirror.is_descendant(rewound, new)


# --- pure logic ---------------------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_known_hosts_matching(tmp_path: Path) -> None:
    key_a, key_b, key_c = b"key-a", b"key-b", b"key-c"
    b64 = {k: base64.b64encode(k).decode() for k in (key_a, key_b, key_c)}
    salt = b"0123456789abcdefghij"
    hashed = hmac.new(salt, b"[git.example]:2222", hashlib.sha1).digest()
    path = tmp_path / "known_hosts"
    path.write_text(
        "# comment\n"
        f"git.example,10.0.0.1 ssh-ed25519 {b64[key_a]}\n"
        f"[git.example]:2222 ssh-ed25519 {b64[key_b]}\n"
        f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(hashed).decode()} ssh-rsa {b64[key_c]}\n"
        f"*.example,!bad.example ssh-ed25519 {b64[key_c]}\n"
        f"@revoked git.example ssh-ed25519 {b64[key_b]}\n"
    )
    assert known_host_keys(path, "git.example", 22) == ([key_a, key_c], [key_b])
    assert known_host_keys(path, "git.example", 2222) == ([key_b, key_c], [])
    assert known_host_keys(path, "bad.example", 22) == ([], [])
    with pytest.raises(AuthError, match="cannot read known_hosts file"):
        known_host_keys(tmp_path / "missing", "git.example", 22)


def test_urls_in_messages_never_carry_a_password() -> None:
    assert redact("https://bot:s3cr3t-t0ken@git.example/fleet.git") == "https://bot:***@git.example/fleet.git"
    assert redact("ssh://git@git.example:2222/fleet") == "ssh://git@git.example:2222/fleet"


def test_token_is_read_at_use_time_and_never_shown(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-ABCDEF-123456\n")
    auth = GitAuth(token_file=token, username="bot")
    assert "tok-ABCDEF" not in repr(auth)
    mirror = FleetMirror(tmp_path / "repo", "https://127.0.0.1:1/fleet.git", auth=auth, timeout=2)
    with pytest.raises(Transient) as info:
        mirror.fetch()
    assert "tok-ABCDEF" not in str(info.value)
