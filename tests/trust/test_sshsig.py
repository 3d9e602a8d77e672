"""The SSH signature verifier against signatures made by the real ``ssh-keygen -Y sign``."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from reconciler.trust import sshsig
from tests.trust.signing import Key, make_key


def ssh_sign(key: Key, message: bytes, tmp_path: Path, namespace: str = "git") -> bytes:
    msg = tmp_path / "msg"
    msg.write_bytes(message)
    (tmp_path / "msg.sig").unlink(missing_ok=True)  # ssh-keygen asks before it overwrites, and keeps the old one
    subprocess.run(["ssh-keygen", "-q", "-Y", "sign", "-f", str(key.private), "-n", namespace, str(msg)],
                   check=True, capture_output=True)
    return (tmp_path / "msg.sig").read_bytes()


@pytest.mark.parametrize("name", ["alice", "bob", "carol"])
def test_ssh_keygen_signatures_verify_and_tampering_does_not(name: str, keys: dict[str, Key],
                                                              tmp_path: Path) -> None:
    sig = sshsig.parse(ssh_sign(keys[name], b"payload\n", tmp_path))
    assert sig.key.type == keys[name].public.split()[0]
    sshsig.verify(sig, b"payload\n", "git")
    with pytest.raises(sshsig.BadSignature) as info:
        sshsig.verify(sig, b"payload!\n", "git")
    assert info.value.code == "BadSignature"


def test_namespace_must_match(keys: dict[str, Key], tmp_path: Path) -> None:
    sig = sshsig.parse(ssh_sign(keys["alice"], b"x", tmp_path, namespace="file"))
    with pytest.raises(sshsig.BadSignature, match="namespace 'file', not 'git'"):
        sshsig.verify(sig, b"x", "git")


def test_ecdsa_p384_and_small_rsa(tmp_path: Path) -> None:
    p384 = make_key(tmp_path, "p384@x", "ecdsa")
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f", str(tmp_path / "e384")], check=True)
    e384 = Key("e384@x", tmp_path / "e384")
    for key in (p384, e384):
        sig = sshsig.parse(ssh_sign(key, b"m", tmp_path))
        sshsig.verify(sig, b"m", "git")
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(tmp_path / "r1024")],
                   check=True)
    small = sshsig.parse(ssh_sign(Key("small@x", tmp_path / "r1024"), b"m", tmp_path))
    with pytest.raises(sshsig.BadSignature, match="too small") as info:
        sshsig.verify(small, b"m", "git")
    assert info.value.code == "UnsupportedKey"


def _armor(blob: bytes) -> bytes:
    return b"-----BEGIN SSH SIGNATURE-----\n" + base64.encodebytes(blob) + b"-----END SSH SIGNATURE-----\n"


def _s(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def test_malformed_huge_and_unsupported_signatures_are_classified(keys: dict[str, Key], tmp_path: Path) -> None:
    good = ssh_sign(keys["alice"], b"m", tmp_path)
    cases = {
        b"-----BEGIN SSH SIGNATURE-----\n" + b"A" * 20_000 + b"\n-----END SSH SIGNATURE-----": "more than",
        b"not a signature": "no BEGIN/END",
        good.replace(b"U1NIU0lH", b"U1NIU0!H"): "not valid base64",
        _armor(b"SSHSIG\x00\x00\x00\x01\x00\x00\xff\xff"): "truncated",
        _armor(b"SSHSIG\x00\x00\x00\x02"): "version 2",
        _armor(b"XXXSIG\x00\x00\x00\x01"): "preamble",
    }
    for raw, message in cases.items():
        with pytest.raises(sshsig.BadSignature, match=message) as info:
            sshsig.parse(raw)
        assert info.value.code == "MalformedSignature"
    # a key type we do not verify (a FIDO security key) is refused as unsupported, not crashed on
    sk_key = _s(b"sk-ssh-ed25519@openssh.com") + _s(b"\x00" * 32) + _s(b"ssh:")
    blob = (b"SSHSIG" + (1).to_bytes(4, "big") + _s(sk_key) + _s(b"git") + _s(b"") + _s(b"sha512")
            + _s(_s(b"sk-ssh-ed25519@openssh.com") + _s(b"\x00" * 64)))
    with pytest.raises(sshsig.BadSignature, match="unsupported key type") as info:
        sshsig.verify(sshsig.parse(_armor(blob)), b"m", "git")
    assert info.value.code == "UnsupportedKey"
    # an unknown hash
    parsed = sshsig.parse(good)
    with pytest.raises(sshsig.BadSignature, match="unsupported signature hash"):
        sshsig.verify(sshsig.Signature(parsed.key, "git", "md5", parsed.sig_type, parsed.sig), b"m", "git")
