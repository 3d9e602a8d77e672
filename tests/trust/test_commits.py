"""verify_range on real repositories signed by the real git CLI; ``git verify-commit`` is the reference."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pygit2
import pytest

from reconciler.errors import InvalidConfig
from reconciler.trust.allowed_signers import parse
from reconciler.trust.commits import Policy, Verdict, verify_range
from tests.trust.signing import Key, git_verifies, run_git, signed_commit, signed_merge, tampered

FLEET = "apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: t}\nspec: {}\n"
SCOPED = ("apiVersion: fleet/v1\nkind: Fleet\nmetadata: {name: t}\nspec:\n  policy:\n    signers:\n"
          "      rollout-bot@acme.example: ['rollouts/**', 'groups/canary-*']\n")


@pytest.fixture
def repo(tmp_path: Path, keys: dict[str, Key]) -> Path:
    r = tmp_path / "fleet"
    r.mkdir()
    run_git(r, "init", "-q", "-b", "main")
    signed_commit(r, {"fleet.yaml": FLEET}, "initial", keys["alice"])
    return r


def anchor(tmp_path: Path, lines: list[str]) -> tuple[Path, Policy]:
    path = tmp_path / "allowed_signers"
    path.write_text("\n".join(lines) + "\n")
    return path, Policy(parse(path.read_bytes(), str(path)))


def check(repo: Path, policy: Policy, base: str | None, tip: str) -> Verdict:
    r = pygit2.Repository(str(repo))
    return verify_range(r, pygit2.Oid(hex=base) if base else None, pygit2.Oid(hex=tip), policy)


def test_every_case_agrees_with_git_verify_commit(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    """good (ed25519, RSA, ECDSA), unsigned, unknown key, tampered, expired: our verdict equals git's."""
    allowed, policy = anchor(tmp_path, [
        keys["alice"].line(), keys["bob"].line(), keys["carol"].line(),
        keys["bot"].line('namespaces="git",valid-before="20200101Z"')])
    cases: dict[str, tuple[str, str]] = {}  # name -> (sha, expected code)
    for name, key in (("ed25519", "alice"), ("rsa", "bob"), ("ecdsa", "carol")):
        cases[name] = (signed_commit(repo, {f"{name}.txt": name}, f"good {name}", keys[key]), "Verified")
    cases["unsigned"] = (signed_commit(repo, {"u.txt": "u"}, "unsigned", None), "Unsigned")
    cases["unknown"] = (signed_commit(repo, {"m.txt": "m"}, "by mallory", keys["mallory"]), "UnknownKey")
    good = signed_commit(repo, {"t.txt": "t"}, "to be tampered", keys["alice"])
    cases["tampered"] = (tampered(repo, good), "BadSignature")
    cases["expired"] = (signed_commit(repo, {"e.txt": "e"}, "expired key", keys["bot"]), "ExpiredKey")
    for name, (sha, code) in cases.items():
        ours = check(repo, policy, None, sha)
        assert ours.checks[0].code == code, (name, ours.checks[0])
        assert ours.ok == git_verifies(repo, sha, allowed) == (code == "Verified"), name
    # the signer is named by principal and key fingerprint, as ssh-keygen prints it
    first = check(repo, policy, None, cases["rsa"][0]).checks[0]
    listed = subprocess.run(["ssh-keygen", "-lf", f"{keys['bob'].private}.pub"], check=True, capture_output=True,
                            text=True).stdout.split()[1]
    assert first.signer == "bob@acme.example" and first.key == listed


def test_key_valid_at_commit_time_not_now(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    allowed, policy = anchor(tmp_path, [keys["alice"].line(), keys["bot"].line(
        'namespaces="git",valid-after="20210101Z",valid-before="20220101Z"')])
    old = signed_commit(repo, {"a": "1"}, "while the key was valid", keys["bot"], date="2021-06-01T12:00:00Z")
    early = signed_commit(repo, {"a": "2"}, "before the key was valid", keys["bot"], date="2020-06-01T12:00:00Z")
    assert check(repo, policy, None, old).ok and git_verifies(repo, old, allowed)
    verdict = check(repo, policy, None, early)
    assert verdict.checks[0].code == "KeyNotYetValid" and not git_verifies(repo, early, allowed)


def test_one_bad_commit_blocks_the_range_and_is_named(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    _, policy = anchor(tmp_path, [keys["alice"].line()])
    base = run_git(repo, "rev-parse", "HEAD").stdout.strip()
    signed_commit(repo, {"a": "1"}, "good one", keys["alice"])
    bad = signed_commit(repo, {"b": "1"}, "sneaky", None)
    tip = signed_commit(repo, {"c": "1"}, "good tip", keys["alice"])
    verdict = check(repo, policy, base, tip)
    assert [c.code for c in verdict.checks] == ["Verified", "Unsigned", "Verified"]
    assert not verdict.ok and verdict.failure is not None and verdict.failure.commit == bad
    assert verdict.message().startswith(f"commit {bad[:12]} by Test Operator <operator@example.com> ('sneaky')")
    assert "Unsigned" in verdict.message()
    # the tip alone would pass: the range is what counts
    assert check(repo, policy, None, tip).ok


def test_merges_are_checked_and_so_are_the_merged_commits(repo: Path, tmp_path: Path,
                                                           keys: dict[str, Key]) -> None:
    _, policy = anchor(tmp_path, [keys["alice"].line(), keys["bob"].line()])
    base = run_git(repo, "rev-parse", "HEAD").stdout.strip()
    run_git(repo, "checkout", "-q", "-b", "side")
    signed_commit(repo, {"side.txt": "s"}, "side work", None)
    run_git(repo, "checkout", "-q", "main")
    signed_commit(repo, {"main.txt": "m"}, "main work", keys["alice"])
    merge = signed_merge(repo, "side", keys["bob"])
    verdict = check(repo, policy, base, merge)
    assert len(verdict.checks) == 3 and verdict.checks[-1].commit == merge
    assert verdict.failure is not None and verdict.failure.summary == "side work"
    # unsigned merge of signed work
    run_git(repo, "reset", "-q", "--hard", base)
    run_git(repo, "checkout", "-q", "-B", "side2")
    signed_commit(repo, {"side.txt": "s2"}, "signed side work", keys["bob"])
    run_git(repo, "checkout", "-q", "main")
    signed_commit(repo, {"main.txt": "m2"}, "main work 2", keys["alice"])
    merge2 = signed_merge(repo, "side2", None)
    verdict = check(repo, policy, base, merge2)
    assert [c.code for c in verdict.checks][-1] == "Unsigned" and verdict.failure is not None
    assert verdict.failure.commit == merge2


def test_path_scopes(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    _, policy = anchor(tmp_path, [keys["alice"].line(), keys["bot"].line()])
    base = signed_commit(repo, {"fleet.yaml": SCOPED}, "scope the bot", keys["alice"])
    ok = signed_commit(repo, {"rollouts/r1.yaml": "x", "groups/canary-1.yaml": "y"}, "bot in scope", keys["bot"])
    assert check(repo, policy, base, ok).ok
    out = signed_commit(repo, {"groups/all.yaml": "z", "rollouts/r2.yaml": "x"}, "bot out of scope", keys["bot"])
    verdict = check(repo, policy, ok, out)
    bad = verdict.failure
    assert bad is not None and bad.code == "PathNotAllowed" and bad.signer == "rollout-bot@acme.example"
    assert "groups/all.yaml" in bad.detail and "rollouts/r2.yaml" not in bad.detail
    assert "may change only groups/canary-*, rollouts/**" in bad.detail
    # the bot may not widen its own scope: fleet.yaml is outside it, and the parent's policy counts
    run_git(repo, "reset", "-q", "--hard", ok)
    widen = signed_commit(repo, {"fleet.yaml": FLEET, "groups/all.yaml": "z"}, "bot widens", keys["bot"])
    assert check(repo, policy, ok, widen).failure is not None
    # unlisted principals may change everything, deletions included
    run_git(repo, "reset", "-q", "--hard", ok)
    admin = signed_commit(repo, {"rollouts/r1.yaml": None, "devices/d.yaml": "d"}, "admin", keys["alice"])
    assert check(repo, policy, ok, admin).ok


def test_scopes_relative_to_the_fleet_path(tmp_path: Path, keys: dict[str, Key]) -> None:
    r = tmp_path / "mono"
    r.mkdir()
    run_git(r, "init", "-q", "-b", "main")
    base = signed_commit(r, {"fleet/fleet.yaml": SCOPED, "README": "x"}, "init", keys["alice"])
    _, p = anchor(tmp_path, [keys["alice"].line(), keys["bot"].line()])
    policy = Policy(p.anchor, "fleet")
    inside = signed_commit(r, {"fleet/rollouts/a.yaml": "a"}, "in scope", keys["bot"])
    assert check(r, policy, base, inside).ok
    outside = signed_commit(r, {"rollouts/a.yaml": "a"}, "outside the fleet dir", keys["bot"])
    failure = check(r, policy, inside, outside).failure
    assert failure is not None and failure.code == "PathNotAllowed" and "/rollouts/a.yaml" in failure.detail


def test_rotation_through_the_repo(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    _, policy = anchor(tmp_path, [keys["alice"].line()])
    base = run_git(repo, "rev-parse", "HEAD").stdout.strip()
    add = signed_commit(repo, {".fleet/allowed_signers": keys["bob"].line() + "\n"}, "trust bob", keys["alice"])
    by_bob = signed_commit(repo, {"a": "1"}, "bob's first", keys["bob"])
    assert check(repo, policy, base, by_bob).ok
    # the key vouches only for commits after the one that added it
    run_git(repo, "reset", "-q", "--hard", base)
    self_add = signed_commit(repo, {".fleet/allowed_signers": keys["mallory"].line() + "\n"}, "mallory adds herself",
                             keys["mallory"])
    then = signed_commit(repo, {"a": "1"}, "mallory's change", keys["mallory"])
    verdict = check(repo, policy, base, then)
    assert verdict.failure is not None and verdict.failure.commit == self_add
    assert verdict.failure.code == "UnknownKey"
    # a first apply trusts the anchor alone: a forged parent cannot vouch for the tip
    assert check(repo, policy, None, then).checks[0].code == "UnknownKey"
    # removal: after bob's key leaves the file, bob's commits are refused
    run_git(repo, "reset", "-q", "--hard", by_bob)
    removed = signed_commit(repo, {".fleet/allowed_signers": "# nobody\n"}, "drop bob", keys["alice"])
    late = signed_commit(repo, {"a": "2"}, "bob after removal", keys["bob"])
    failure = check(repo, policy, add, late).failure
    assert failure is not None and failure.commit == late and failure.code == "UnknownKey"
    assert check(repo, policy, add, removed).ok


def test_a_broken_repo_signers_file_is_a_located_failure(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    _, policy = anchor(tmp_path, [keys["alice"].line()])
    base = run_git(repo, "rev-parse", "HEAD").stdout.strip()
    broken = signed_commit(repo, {".fleet/allowed_signers": "bob@x ssh-ed25519 not-base64!\n"}, "typo",
                           keys["alice"])
    failure = check(repo, policy, base, broken).failure
    assert failure is not None and failure.code == "InvalidAllowedSigners"
    assert f"{broken[:12]}:.fleet/allowed_signers:1:" in failure.detail


def test_openpgp_signatures_are_reported_unsupported(repo: Path, tmp_path: Path, keys: dict[str, Key]) -> None:
    _, policy = anchor(tmp_path, [keys["alice"].line()])
    raw = run_git(repo, "cat-file", "commit", "HEAD").stdout
    head, _, rest = raw.partition("gpgsig ")
    sig_end = rest.index("-----END SSH SIGNATURE-----") + len("-----END SSH SIGNATURE-----")
    pgp = "-----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----"
    forged = head + "gpgsig " + pgp + rest[sig_end:]
    sha = subprocess.run(["git", "hash-object", "-t", "commit", "-w", "--stdin"], cwd=repo, input=forged,
                         check=True, capture_output=True, text=True).stdout.strip()
    c = check(repo, policy, None, sha).checks[0]
    assert c.code == "UnsupportedSignature" and "gpg.format=ssh" in c.detail


def test_allowed_signers_syntax_errors_are_located(tmp_path: Path, keys: dict[str, Key]) -> None:
    text = "\n".join([
        "# comment", "",
        keys["alice"].line(),
        f'bob@x valid-before="2020-01-01" {keys["alice"].public}',
        f"carol@x namespaces=git {keys['alice'].public}",
        f"dave@x frobnicate {keys['alice'].public}",
        "eve@x ssh-ed25519",
        f"frank@x {keys['alice'].public.replace('ssh-ed25519', 'ssh-rsa')}",
        'gina@x "unterminated',
        f"hal@x ssh-foo {keys['alice'].public.split()[1]}",
    ]).encode()
    with pytest.raises(InvalidConfig) as info:
        parse(text, "/etc/reconciler/allowed_signers")
    lines = [p.format() for p in info.value.problems]
    assert [p.line for p in info.value.problems] == [4, 5, 6, 7, 8, 9, 10]
    assert lines[0].startswith("/etc/reconciler/allowed_signers:4:") and "valid-before" in lines[0]
    assert "needs a quoted value" in lines[1] and "unknown option 'frobnicate'" in lines[2]
    assert "does not match its blob" in lines[4] and "unterminated quote" in lines[5]
    assert "unsupported key type 'ssh-foo'" in lines[6] and info.value.problems[6].field == "keytype"
    with pytest.raises(InvalidConfig, match="limit"):
        parse(b"#" * (2 * 1024 * 1024), "big")
