"""Model signatures: our verifier and signer against the real ``model_signing`` package (sign and verify)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.trust.models import MAX_SIGNATURE_BYTES, ModelKey, ModelSignatureError, verify_model
from reconciler.trust.modelsign import sign
from tests.trust.modelsigning import ms_sign, ms_verifies


def ec_key(directory: Path, name: str, curve: str = "prime256v1") -> tuple[Path, Path]:
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    subprocess.run(["openssl", "ecparam", "-name", curve, "-genkey", "-noout", "-out", str(private)], check=True)
    subprocess.run(["openssl", "ec", "-in", str(private), "-pubout", "-out", str(public)], check=True,
                   capture_output=True)
    return private, public


@pytest.fixture(scope="module")
def model_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("model-keys")
    return {"release": ec_key(d, "release"), "other": ec_key(d, "other"), "p384": ec_key(d, "p384", "secp384r1")}


def model_dir(root: Path) -> Path:
    m = root / "model"
    (m / "tokenizer").mkdir(parents=True)
    (m / "weights.bin").write_bytes(b"\x00\x01" * 5000)
    (m / "serve.py").write_text("print('serving')\n")
    (m / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    return m


def theirs_verify(m: Path, public: Path) -> bool:
    return ms_verifies(m, public)


def ours(m: Path, public: Path, name: str = "release") -> str:
    return verify_model(m, [ModelKey(name, public.read_bytes())]).signer


def test_model_signing_signatures_verify_and_every_tampering_is_caught_by_both(
        tmp_path: Path, model_keys: dict[str, tuple[Path, Path]]) -> None:
    private, public = model_keys["release"]
    m = model_dir(tmp_path)
    ms_sign(m, private)
    assert ours(m, public) == "release" and theirs_verify(m, public)
    original = (m / "weights.bin").read_bytes()
    tamperings = {
        "changed": lambda: (m / "weights.bin").write_bytes(original + b"!"),
        "not signed": lambda: (m / "extra.py").write_text("import os\n"),
        "missing": lambda: (m / "tokenizer" / "vocab.txt").unlink(),
    }
    for word, tamper in tamperings.items():
        snapshot = {p: p.read_bytes() for p in m.rglob("*") if p.is_file()}
        tamper()
        with pytest.raises(ModelSignatureError, match=word) as info:
            ours(m, public)
        assert info.value.code == "Tampered"
        assert not theirs_verify(m, public), word
        for p in [p for p in m.rglob("*") if p.is_file() and p not in snapshot]:
            p.unlink()
        for p, data in snapshot.items():
            p.write_bytes(data)
        assert ours(m, public) == "release" and theirs_verify(m, public)
    # another key: refused by both, named as not allowed
    _, other = model_keys["other"]
    with pytest.raises(ModelSignatureError, match="not allowed") as info:
        ours(m, other, "other")
    assert info.value.code == "UnknownKey" and not theirs_verify(m, other)


def test_our_signature_verifies_with_model_signing(tmp_path: Path, model_keys: dict[str, tuple[Path, Path]]) -> None:
    for name in ("release", "p384"):
        private, public = model_keys[name]
        m = model_dir(tmp_path / name)
        (m / "model.sig").write_bytes(sign([m / "weights.bin", m / "serve.py", m / "tokenizer"], private, "model"))
        assert theirs_verify(m, public), name
        assert ours(m, public, name) == name
        (m / "serve.py").write_text("print('evil')\n")
        assert not theirs_verify(m, public)
        with pytest.raises(ModelSignatureError, match=r"changed: serve\.py"):
            ours(m, public, name)


def test_bad_signatures_and_keys_are_classified(tmp_path: Path, model_keys: dict[str, tuple[Path, Path]]) -> None:
    private, public = model_keys["release"]
    m = model_dir(tmp_path)
    key = [ModelKey("release", public.read_bytes())]
    with pytest.raises(ModelSignatureError, match="no signature") as info:
        verify_model(m, key)
    assert info.value.code == "MissingSignature"
    good = json.loads(sign([m / "weights.bin", m / "serve.py", m / "tokenizer"], private, "model"))
    forged_payload = dict(good, dsseEnvelope=dict(good["dsseEnvelope"], payload=good["dsseEnvelope"]["payload"][:-8]
                                                  + "AAAAAAA="))
    cert = dict(good, verificationMaterial={"certificate": {"rawBytes": "AAAA"}})
    cases = {
        b"\x00garbage": ("not JSON", "MalformedSignature"),
        b"{}": ("not a Sigstore bundle", "MalformedSignature"),
        json.dumps(cert).encode(): ("only key-based", "UnsupportedSignature"),
        json.dumps(forged_payload).encode(): ("does not verify", "BadSignature"),
        b" " * (MAX_SIGNATURE_BYTES + 1): ("limit", "MalformedSignature"),
    }
    for raw, (message, code) in cases.items():
        (m / "model.sig").write_bytes(raw)
        with pytest.raises(ModelSignatureError, match=message) as info:
            verify_model(m, key)
        assert info.value.code == code
    with pytest.raises(ModelSignatureError, match="not a PEM public key") as info:
        ModelKey("junk", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").public()
    assert info.value.code == "InvalidKey"
    ed = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"], check=True, capture_output=True).stdout
    ed_pub = subprocess.run(["openssl", "pkey", "-pubout"], input=ed, check=True, capture_output=True).stdout
    with pytest.raises(ModelSignatureError, match="only ECDSA"):
        ModelKey("ed", ed_pub).public()
