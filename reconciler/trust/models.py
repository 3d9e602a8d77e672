"""Model signatures: the OpenSSF Model Signing format (``model_signing`` 1.x, key-based), verified offline.

Follows the format that ``model_signing sign key`` writes (model-transparency v1.0 signature):

    model.sig   a Sigstore bundle (mediaType application/vnd.dev.sigstore.bundle.v0.3+json) without a
                transparency log entry, whose DSSE envelope carries an in-toto Statement v1:
                  predicateType  https://model_signing/signature/v1.0
                  predicate      serialization {method: files, hash_type: sha256, ignore_paths, ...}
                                 resources [{name, algorithm: sha256, digest}]  every file of the model dir
                  subject[0]     digest.sha256 = SHA-256 over the resources' digests, in order
                the DSSE signature: ECDSA (P-256/384/521, SHA-256/384/512 by curve) over
                PAE("application/vnd.in-toto+json", payload); verificationMaterial.publicKey.hint is
                the SHA-256 of the key's PEM SubjectPublicKeyInfo

A directory verifies when the signature is by one of the allowed keys, the statement is consistent, and
the files on disk are exactly the resources (no file missing, none added, every digest equal).  Not
supported (refused with a reason): certificate and Sigstore (keyless) bundles, the ``shards`` serialization,
the pre-1.0 envelope.  Our own verifier keeps the agent light (``model_signing`` pulls in sigstore and
protobuf); the tests compare its verdicts with ``model_signing verify``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.errors import Untrusted

SIGNATURE_FILE = "model.sig"
MAX_SIGNATURE_BYTES = 4 * 1024 * 1024  # a manifest of ~30,000 files
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT = "https://in-toto.io/Statement/v1"
PREDICATE = "https://model_signing/signature/v1.0"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")


class ModelSignatureError(Untrusted):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code  # MissingSignature | MalformedSignature | UnknownKey | BadSignature | Tampered |
        #                   UnsupportedSignature | InvalidKey


@dataclass(frozen=True)
class ModelKey:
    name: str
    pem: bytes

    @property
    def hint(self) -> str:
        return hashlib.sha256(self._public_pem()).hexdigest()

    def _public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        pem: bytes = self.public().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem

    def public(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_public_key(self.pem)
        except (ValueError, TypeError) as exc:
            raise ModelSignatureError(f"model key {self.name!r} is not a PEM public key: {exc}", "InvalidKey") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVES:
            raise ModelSignatureError(f"model key {self.name!r}: only ECDSA P-256/384/521 keys are supported",
                                      "InvalidKey")
        return key


_CURVES = {"secp256r1": "SHA256", "secp384r1": "SHA384", "secp521r1": "SHA512"}


@dataclass(frozen=True)
class ModelVerdict:
    signer: str  # the key's name
    files: int


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def verify_model(directory: Path, keys: Iterable[ModelKey], *, signature: Path | None = None,
                 ignore: Iterable[str] = ()) -> ModelVerdict:
    """Check ``directory`` against its signature (default ``directory/model.sig``); raise ModelSignatureError."""
    sig_path = signature or directory / SIGNATURE_FILE
    try:
        size = sig_path.stat().st_size
        if size > MAX_SIGNATURE_BYTES:
            raise ModelSignatureError(f"{sig_path.name} is {size} bytes (limit {MAX_SIGNATURE_BYTES})",
                                      "MalformedSignature")
        raw = sig_path.read_bytes()
    except FileNotFoundError:
        raise ModelSignatureError(f"the model has no signature ({sig_path.name} missing)", "MissingSignature") from None
    except OSError as exc:
        raise ModelSignatureError(f"{sig_path.name}: cannot read: {exc.strerror}", "MissingSignature") from None
    hint, payload_type, payload, sig = _envelope(raw)
    signer = _check_signature(list(keys), hint, payload_type, payload, sig)
    resources, ignored = _statement(payload)
    skip = {*ignore, *ignored, *GIT_PATHS}
    if sig_path.parent == directory:
        skip.add(sig_path.name)
    _compare(directory, resources, skip)
    return ModelVerdict(signer, len(resources))


def _bad(message: str, code: str = "MalformedSignature") -> ModelSignatureError:
    return ModelSignatureError(message, code)


def _envelope(raw: bytes) -> tuple[str, str, bytes, bytes]:
    try:
        bundle = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _bad(f"{SIGNATURE_FILE} is not JSON") from None
    if not isinstance(bundle, dict) or not str(bundle.get("mediaType", "")).startswith(
            "application/vnd.dev.sigstore.bundle"):
        raise _bad(f"{SIGNATURE_FILE} is not a Sigstore bundle (mediaType)")
    material = bundle.get("verificationMaterial") or {}
    if not isinstance(material, dict) or "publicKey" not in material:
        raise _bad("only key-based model signatures are supported (no certificate or keyless bundles)",
                   "UnsupportedSignature")
    envelope = bundle.get("dsseEnvelope")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signatures"), list) or not envelope["signatures"]:
        raise _bad(f"{SIGNATURE_FILE} has no DSSE envelope with a signature")
    first = envelope["signatures"][0]
    try:
        payload = base64.b64decode(str(envelope.get("payload", "")), validate=True)
        sig = base64.b64decode(str(first.get("sig", "")) if isinstance(first, dict) else "", validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{SIGNATURE_FILE}: payload or signature is not base64") from None
    hint = (material.get("publicKey") or {}).get("hint", "") if isinstance(material.get("publicKey"), dict) else ""
    return str(hint or ""), str(envelope.get("payloadType", "")), payload, sig


def _check_signature(keys: list[ModelKey], hint: str, payload_type: str, payload: bytes, sig: bytes) -> str:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if payload_type != PAYLOAD_TYPE:
        raise _bad(f"DSSE payload type {payload_type!r}, expected {PAYLOAD_TYPE}")
    if not keys:
        raise _bad("no model signing keys are allowed (trust.modelKeys or .fleet/model-keys/)", "UnknownKey")
    candidates = [k for k in keys if k.hint == hint] if hint else keys
    if not candidates:
        raise _bad(f"signed by a key that is not allowed (hint {hint[:16]}...; allowed: "
                   f"{', '.join(k.name for k in keys)})", "UnknownKey")
    message = pae(payload_type, payload)
    for key in candidates:
        public = key.public()
        try:
            public.verify(sig, message, ec.ECDSA(getattr(hashes, _CURVES[public.curve.name])()))
            return key.name
        except InvalidSignature:
            continue
    raise _bad(f"the signature does not verify with {', '.join(k.name for k in candidates)} (tampered signature)",
               "BadSignature")


def _statement(payload: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    try:
        doc = json.loads(payload)
        if doc.get("_type") != STATEMENT or doc.get("predicateType") != PREDICATE:
            raise _bad(f"statement is not a {PREDICATE} statement", "UnsupportedSignature")
        predicate = doc["predicate"]
        serialization = predicate["serialization"]
        if serialization.get("method") != "files" or serialization.get("hash_type") != "sha256":
            raise _bad(f"serialization {serialization.get('method')}/{serialization.get('hash_type')} is not "
                       "supported (files/sha256)", "UnsupportedSignature")
        resources = [(str(r["name"]), str(r["digest"])) for r in predicate["resources"]
                     if r.get("algorithm", "sha256") == "sha256"]
        if len(resources) != len(predicate["resources"]):
            raise _bad("a resource uses a digest other than sha256", "UnsupportedSignature")
        root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d in resources)).hexdigest()
        if doc["subject"][0]["digest"]["sha256"] != root:
            raise _bad("the statement's subject digest does not match its resources", "BadSignature")
        ignored = [str(p) for p in serialization.get("ignore_paths") or []]
    except ModelSignatureError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        raise _bad("the signed statement is malformed") from None
    return resources, ignored


def _compare(directory: Path, resources: list[tuple[str, str]], skip: set[str]) -> None:
    on_disk = dict(_hash_tree(directory, skip))
    signed = dict(resources)
    missing = sorted(set(signed) - set(on_disk))
    added = sorted(set(on_disk) - set(signed))
    changed = sorted(n for n in set(signed) & set(on_disk) if signed[n] != on_disk[n])
    if missing or added or changed:
        parts = [f"{what}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                 for what, names in (("changed", changed), ("missing", missing), ("not signed", added)) if names]
        raise ModelSignatureError(f"the model's files do not match the signature ({'; '.join(parts)})", "Tampered")


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _hash_tree(directory: Path, skip: set[str]) -> Iterable[tuple[str, str]]:
    for root, dirs, files in os.walk(directory):
        rel_root = os.path.relpath(root, directory)
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = sorted(d for d in dirs if f"{rel_root}{d}" not in skip)
        for d in dirs + files:
            if os.path.islink(os.path.join(root, d)):
                raise ModelSignatureError(f"the model contains a symlink ({rel_root}{d}), which model signatures "
                                          "do not cover", "Tampered")
        for name in sorted(files):
            rel = f"{rel_root}{name}"
            if rel in skip:
                continue
            yield rel, file_digest(os.path.join(root, name))


def keys_from(named: Mapping[str, bytes]) -> list[ModelKey]:
    return [ModelKey(name, pem) for name, pem in sorted(named.items())]
