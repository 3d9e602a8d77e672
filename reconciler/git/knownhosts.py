"""Strict ssh host-key checking against an OpenSSH known_hosts file, for libgit2's certificate callback.

Separate from the git adapter because it is a format of its own (hashed and wildcard host patterns,
``[host]:port`` names, ``@revoked`` markers) and because it reads libgit2's host-key struct directly:
pygit2 hands ``certificate_check`` a ``None`` certificate and its own cdef of ``git_cert_hostkey`` stops
after the SHA-1 hash, so the full struct (libgit2 >= 1.5 layout) is declared here to see the key itself.
If that layout ever changes, the check fails closed: the connection is refused with a clear message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

import cffi  # type: ignore[import-untyped]

from reconciler.errors import AuthError

_CERT_FFI = cffi.FFI()
_CERT_FFI.cdef(
    """
    typedef struct {
        int cert_type;
        int type;
        unsigned char hash_md5[16];
        unsigned char hash_sha1[20];
        unsigned char hash_sha256[32];
        int raw_type;
        const char *hostkey;
        size_t hostkey_len;
    } git_cert_hostkey_full;
    """
)
_CERT_SSH_SHA256 = 1 << 2
_CERT_SSH_RAW = 1 << 3


def verify_host_key(cert_address: int, hostname: str, port: int, known_hosts: Path, label: str) -> None:
    """Raise AuthError unless the host key in libgit2's ``git_cert_hostkey`` at ``cert_address`` is listed
    (and not revoked) for ``hostname``/``port`` in ``known_hosts``; ``label`` names the remote in messages."""
    cert = _CERT_FFI.cast("git_cert_hostkey_full *", cert_address)
    accepted, revoked = known_host_keys(known_hosts, hostname, port)
    if cert.type & _CERT_SSH_RAW:
        offered = bytes(_CERT_FFI.buffer(cert.hostkey, cert.hostkey_len))
        ok = offered in accepted and offered not in revoked
        fingerprint = _fingerprint(offered)
    elif cert.type & _CERT_SSH_SHA256:
        digest = bytes(cert.hash_sha256)
        ok = any(hashlib.sha256(b).digest() == digest for b in accepted) and not any(
            hashlib.sha256(b).digest() == digest for b in revoked
        )
        fingerprint = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    else:
        raise AuthError(f"{label}: the ssh library gave no host key to verify")
    if not ok:
        where = f"[{hostname}]:{port}" if port != 22 else hostname
        listed = "does not match the key listed" if accepted else "is not listed"
        raise AuthError(f"{label}: host key {fingerprint} of {where} {listed} in {known_hosts}")


def known_host_keys(path: Path, host: str, port: int) -> tuple[list[bytes], list[bytes]]:
    """(accepted, revoked) key blobs listed for ``host``/``port`` in an OpenSSH known_hosts file."""
    name = host if port == 22 else f"[{host}]:{port}"
    accepted: list[bytes] = []
    revoked: list[bytes] = []
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AuthError(f"cannot read known_hosts file {path}: {exc.strerror}") from None
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        if len(fields) < 3 or marker == "@cert-authority":
            continue
        if not _host_matches(fields[0], name):
            continue
        try:
            blob = base64.b64decode(fields[2], validate=True)
        except ValueError:
            continue
        (revoked if marker == "@revoked" else accepted).append(blob)
    return accepted, revoked


def _host_matches(patterns: str, name: str) -> bool:
    if patterns.startswith("|1|"):  # hashed entry: |1|base64(salt)|base64(hmac_sha1(salt, name))
        try:
            _, _, salt, digest = patterns.split("|")
            mac = hmac.new(base64.b64decode(salt), name.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except ValueError:
            return False
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        # OpenSSH patterns know only * and ?; "[host]:port" brackets are literal
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lstrip("!"))
        if re.fullmatch(regex, name, flags=re.IGNORECASE):
            if negated:
                return False
            matched = True
    return matched


def _fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def host_lines(path: Path, host: str, port: int) -> list[str]:
    """The lines of ``path`` that list keys for ``host``/``port`` (to hand a device only what it needs)."""
    name = host if port == 22 else f"[{host}]:{port}"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise AuthError(f"cannot read known_hosts file {path}: {exc.strerror}") from None
    out = []
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        patterns = fields[1] if fields[0].startswith("@") and len(fields) > 1 else fields[0]
        if _host_matches(patterns, name):
            out.append(line.strip())
    return out
