"""SSH signatures (OpenSSH PROTOCOL.sshsig), verified with ``cryptography`` (no ssh-keygen on the device).

    -----BEGIN SSH SIGNATURE-----            armored blob:
    "SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved) string(hash) string(signature)

    signed data: "SSHSIG" string(namespace) string(reserved) string(hash) string(H(message))

Key types: ssh-ed25519, ssh-rsa (signature rsa-sha2-256 / rsa-sha2-512; SHA-1 "ssh-rsa" signatures are
refused, as OpenSSH does), ecdsa-sha2-nistp256/384/521.  Security-key (sk-*) and certificate keys are
refused as unsupported.  Every parse is bounded: a signature larger than ``MAX_ARMORED`` is refused
before it is decoded.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import struct
from dataclasses import dataclass
from typing import Any

from reconciler.errors import IntegrityError

MAX_ARMORED = 16 * 1024  # an RSA-16384 signature is ~5 KiB armored
BEGIN = b"-----BEGIN SSH SIGNATURE-----"
END = b"-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_CURVES = {"nistp256": ("secp256r1", "sha256"), "nistp384": ("secp384r1", "sha384"),
           "nistp521": ("secp521r1", "sha512")}
SUPPORTED = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")


class BadSignature(IntegrityError):
    """A signature that does not parse, uses what we do not support, or does not verify."""

    reason = "BadSignature"

    def __init__(self, message: str, code: str = "BadSignature") -> None:
        super().__init__(message)
        self.code = code  # BadSignature | MalformedSignature | UnsupportedKey


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key as its wire blob; equal blobs, equal keys."""

    blob: bytes

    @functools.cached_property
    def type(self) -> str:
        return _Reader(self.blob, "public key").string().decode("ascii", "replace")

    @functools.cached_property
    def fingerprint(self) -> str:
        """``SHA256:...`` as ssh-keygen -l prints it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    @classmethod
    def from_openssh(cls, keytype: str, b64: str, where: str) -> PublicKey:
        try:
            blob = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise BadSignature(f"{where}: the key is not valid base64", "MalformedSignature") from None
        key = cls(blob)
        try:
            actual = key.type
        except BadSignature:
            raise BadSignature(f"{where}: the key blob is malformed", "MalformedSignature") from None
        if actual != keytype:
            raise BadSignature(f"{where}: key type {keytype!r} does not match its blob ({actual!r})",
                               "MalformedSignature")
        return key


@dataclass(frozen=True)
class Signature:
    key: PublicKey
    namespace: str
    hash_algorithm: str
    sig_type: str
    sig: bytes


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BadSignature(f"{self.what} is truncated", "MalformedSignature")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint32(self) -> int:
        value: int = struct.unpack(">I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise BadSignature(f"{self.what} has trailing bytes", "MalformedSignature")


def _s(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def parse(armored: bytes) -> Signature:
    """The armored signature, parsed and bounded; raises BadSignature (MalformedSignature)."""
    if len(armored) > MAX_ARMORED:
        raise BadSignature(f"signature is {len(armored)} bytes, more than the {MAX_ARMORED} allowed",
                           "MalformedSignature")
    text = armored.strip()
    if not text.startswith(BEGIN) or not text.endswith(END):
        raise BadSignature("not an SSH signature (no BEGIN/END SSH SIGNATURE lines)", "MalformedSignature")
    body = b"".join(text[len(BEGIN):-len(END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("SSH signature is not valid base64", "MalformedSignature") from None
    r = _Reader(blob, "SSH signature")
    if r.take(6) != MAGIC:
        raise BadSignature("SSH signature has no SSHSIG preamble", "MalformedSignature")
    version = r.uint32()
    if version != 1:
        raise BadSignature(f"SSH signature version {version} is not supported", "MalformedSignature")
    key = PublicKey(r.string())
    namespace = r.string().decode("utf-8", "replace")
    r.string()  # reserved
    hash_algorithm = r.string().decode("ascii", "replace")
    sig_blob = r.string()
    r.done()
    s = _Reader(sig_blob, "SSH signature blob")
    sig_type = s.string().decode("ascii", "replace")
    sig = s.string()
    s.done()
    return Signature(key, namespace, hash_algorithm, sig_type, sig)


def verify(signature: Signature, message: bytes, namespace: str) -> None:
    """Raise BadSignature unless ``signature`` is a valid signature of ``message`` in ``namespace``."""
    if signature.namespace != namespace:
        raise BadSignature(f"signature is for namespace {signature.namespace!r}, not {namespace!r}")
    hasher = _HASHES.get(signature.hash_algorithm)
    if hasher is None:
        raise BadSignature(f"unsupported signature hash {signature.hash_algorithm!r}", "UnsupportedKey")
    signed = MAGIC + _s(namespace.encode()) + _s(b"") + _s(signature.hash_algorithm.encode()) + _s(
        hasher(message).digest())
    _verify_raw(signature.key, signature.sig_type, signature.sig, signed)


def _verify_raw(key: PublicKey, sig_type: str, sig: bytes, data: bytes) -> None:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

    keytype = key.type
    if keytype not in SUPPORTED:
        raise BadSignature(f"unsupported key type {keytype!r} (supported: {', '.join(SUPPORTED)})",
                           "UnsupportedKey")
    try:
        _check(keytype, _public(key.blob), sig_type, sig, data)
    except InvalidSignature:
        raise BadSignature(f"{keytype} signature does not verify (tampered or signed by another key)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BadSignature(f"{keytype} key or signature is malformed: {exc}", "MalformedSignature") from None


@functools.lru_cache(maxsize=256)
def _public(blob: bytes) -> Any:
    """The ``cryptography`` key for a key blob, built once per key (an RSA key takes a while to build)."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    r = _Reader(blob, "public key")
    keytype = r.string().decode("ascii", "replace")
    if keytype == "ssh-ed25519":
        raw = r.string()
        r.done()
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    if keytype == "ssh-rsa":
        e, n = r.mpint(), r.mpint()
        r.done()
        if n.bit_length() < 2048:
            raise BadSignature(f"RSA key of {n.bit_length()} bits is too small (at least 2048)", "UnsupportedKey")
        return rsa.RSAPublicNumbers(e, n).public_key()
    curve_name = r.string().decode("ascii", "replace")
    point = r.string()
    r.done()
    if keytype != f"ecdsa-sha2-{curve_name}" or curve_name not in _CURVES:
        raise BadSignature(f"ECDSA key {keytype!r} with curve {curve_name!r}", "MalformedSignature")
    return ec.EllipticCurvePublicKey.from_encoded_point(getattr(ec, _CURVES[curve_name][0].upper())(), point)


def _check(keytype: str, public: Any, sig_type: str, sig: bytes, data: bytes) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

    if keytype == "ssh-rsa":
        algorithms: dict[str, Any] = {"rsa-sha2-256": hashes.SHA256(), "rsa-sha2-512": hashes.SHA512()}
        if sig_type not in algorithms:
            raise BadSignature(f"RSA signature type {sig_type!r} is not allowed (rsa-sha2-256 or rsa-sha2-512)",
                               "UnsupportedKey")
        public.verify(sig, data, padding.PKCS1v15(), algorithms[sig_type])
        return
    if sig_type != keytype:
        raise BadSignature(f"signature type {sig_type!r} does not match key type {keytype!r}")
    if keytype == "ssh-ed25519":
        public.verify(sig, data)
        return
    s = _Reader(sig, "ECDSA signature")
    der = utils.encode_dss_signature(s.mpint(), s.mpint())
    s.done()
    digest = _CURVES[keytype.removeprefix("ecdsa-sha2-")][1]
    public.verify(der, data, ec.ECDSA(getattr(hashes, digest.upper())()))
