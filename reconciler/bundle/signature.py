"""The manifest's signature: an SSH signature in the namespace ``edge-reconciler-bundle``, made on the admin
side with ``ssh-keygen -Y sign`` and checked on the device against ``trust.allowedSigners`` (the file that
vouches for fleet commits; a line limited to ``namespaces="git"`` does not vouch for bundles).

Signing is the adapter boundary for ``ssh-keygen``: its failures become Stalled with its own words, never a
key's contents.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from reconciler.bundle.format import NAMESPACE
from reconciler.errors import IntegrityError, Stalled

TIMEOUT = 30.0


def _tool() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise Stalled("bundle signatures need ssh-keygen (Debian: openssh-client)")
    return found


def sign(data: bytes, key: Path) -> bytes:
    """The armored signature of ``data`` made with the private key file ``key``."""
    with tempfile.TemporaryDirectory(prefix="reconciler-sign-") as tmp:
        payload = Path(tmp) / "manifest.json"
        payload.write_bytes(data)
        done = subprocess.run([_tool(), "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE, str(payload)],
                              capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise Stalled(f"cannot sign the bundle with {key}: {_said(done)}")
        return (Path(tmp) / "manifest.json.sig").read_bytes()


def verify(data: bytes, armored: bytes, allowed_signers: Path, where: str) -> str:
    """The principal that signed ``data``; IntegrityError when no key of ``allowed_signers`` did.

    Verified in Python by the trust package (``trust/sshsig.py``): the device needs no ssh-keygen."""
    from reconciler.trust import sshsig
    from reconciler.trust.anchor import load_signers

    signers = load_signers(allowed_signers)
    try:
        sig = sshsig.parse(armored)
        sshsig.verify(sig, data, NAMESPACE)
    except sshsig.BadSignature as exc:
        raise IntegrityError(f"{where}: the signature does not match manifest.json (tampered, or not a bundle "
                             f"signature): {exc}") from None
    match = signers.match(sig.key, NAMESPACE, time.time())
    if not match.principals:
        raise IntegrityError(f"{where}: signed by key {sig.key.fingerprint}, which {allowed_signers} does not "
                             f"allow for bundles ({match.detail})")
    return match.principals[0]


def _said(done: subprocess.CompletedProcess[str]) -> str:
    text = (done.stderr or done.stdout or "").strip().splitlines()
    return text[-1][:300] if text else f"exit {done.returncode}"
