"""Signing a model the way ``model_signing sign key`` does (see ``models.py`` for the format), for
``reconciler publish --sign-key``: the signature covers the files as the device lays them out."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from reconciler.errors import UsageError
from reconciler.trust.models import PAYLOAD_TYPE, PREDICATE, SIGNATURE_FILE, STATEMENT, ModelKey, file_digest, pae

BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def layout(files: Sequence[Path]) -> dict[str, Path]:
    """Name in the activated model directory -> source file: a file by its name, a directory's files under
    the directory's name (its layer is a tar+gzip whose title is that name)."""
    out: dict[str, Path] = {}
    for path in files:
        if path.is_dir():
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    full = Path(root) / name
                    out[f"{path.name}/{full.relative_to(path).as_posix()}"] = full
        else:
            out[path.name] = path
    return out


def sign(files: Sequence[Path], private_key: Path, model_name: str) -> bytes:
    """The model.sig bundle over ``files`` signed with an ECDSA private key (PEM)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(private_key.read_bytes(), None)
    except OSError as exc:
        raise UsageError(f"--sign-key {private_key}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--sign-key {private_key}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"--sign-key {private_key}: model signing keys are ECDSA (openssl ecparam -name prime256v1)")
    public = ModelKey("signer", key.public_key().public_bytes(serialization.Encoding.PEM,
                                                               serialization.PublicFormat.SubjectPublicKeyInfo))
    resources = [{"name": name, "algorithm": "sha256", "digest": file_digest(path)}
                 for name, path in sorted(layout(files).items()) if name != SIGNATURE_FILE]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    statement = {"_type": STATEMENT, "subject": [{"name": model_name, "digest": {"sha256": root}}],
                 "predicateType": PREDICATE,
                 "predicate": {"serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                                                 "ignore_paths": [SIGNATURE_FILE]},
                               "resources": resources}}
    payload = json.dumps(statement, indent=2).encode()
    digest = {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[key.curve.key_size]
    sig = key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(digest))
    bundle = {"mediaType": BUNDLE,
              "verificationMaterial": {"publicKey": {"hint": public.hint}, "tlogEntries": []},
              "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE,
                               "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": ""}]}}
    return (json.dumps(bundle, indent=2) + "\n").encode()
