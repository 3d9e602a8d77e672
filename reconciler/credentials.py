"""Credentials held on the device, named by ``credentialsRef`` in the fleet repo.

The agent configuration maps a name to a username plus ``passwordFile``, or to a ``tokenFile``.
Environment variables may supply them too: ``RECONCILER_CRED_<NAME>_USERNAME`` / ``_PASSWORD`` / ``_TOKEN``
(name upper-cased, ``-`` and ``.`` as ``_``).  A ``Credential`` never prints its secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import NotFound


@dataclass(frozen=True)
class Credential:
    name: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"credential {self.name!r}"

    def secrets(self) -> tuple[str, ...]:
        """The secret strings, so that callers can mask them out of any text they print."""
        return tuple(s for s in (self.password, self.token) if s)


def _read_secret(path: str, name: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise NotFound(f"credential {name!r}: cannot read its secret file {path}: {exc.strerror}") from None


def _env_name(name: str) -> str:
    return "RECONCILER_CRED_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class CredentialStore:
    """Resolves ``credentialsRef`` names against the agent configuration and the environment."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]] | None = None, environ: Mapping[str, str] | None = None):
        self._entries = dict(entries or {})
        self._environ = os.environ if environ is None else environ

    def resolve(self, ref: str | None) -> Credential | None:
        if not ref:
            return None
        entry = self._entries.get(ref)
        if entry is not None:
            password = entry.get("password")
            if entry.get("passwordFile"):
                password = _read_secret(str(entry["passwordFile"]), ref)
            token = entry.get("token")
            if entry.get("tokenFile"):
                token = _read_secret(str(entry["tokenFile"]), ref)
            return Credential(ref, entry.get("username"), password, token)
        prefix = _env_name(ref)
        user = self._environ.get(prefix + "_USERNAME")
        password = self._environ.get(prefix + "_PASSWORD")
        token = self._environ.get(prefix + "_TOKEN")
        if user or password or token:
            return Credential(ref, user, password, token)
        raise NotFound(
            f"credentialsRef {ref!r} is not defined on this device "
            f"(add it under 'credentials' in the agent configuration, or set {prefix}_USERNAME/_PASSWORD)"
        )


def storage_env(ref: str | None, store: CredentialStore) -> dict[str, str]:
    """The S3 credential named by a storage ``credentialsRef``, in the variables S3 SDKs read.  Added by a runtime
    to the workload's environment at start only: never part of a workload, the agent state or a status."""
    credential = store.resolve(ref)
    if credential is None:
        return {}
    return {"AWS_ACCESS_KEY_ID": credential.username or "",
            "AWS_SECRET_ACCESS_KEY": credential.password or credential.token or ""}


def mask(text: str, secrets: tuple[str, ...] | list[str]) -> str:
    """Replace every secret in ``text`` by ``***``."""
    for s in secrets:
        if s and len(s) >= 3:
            text = text.replace(s, "***")
    return text
