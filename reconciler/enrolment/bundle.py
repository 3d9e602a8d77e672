"""The join bundle: everything a device needs to run its agent, in one JSON file of mode 0600.

    {"apiVersion": "fleet/v1", "kind": "JoinBundle", "device": NAME, "created": ISO, "expires": ISO,
     "config": {agent.yaml without the file paths}, "sshKey": PRIVATE KEY, "sshPublicKey": ...,
     "knownHosts": ..., "allowedSigners": ... | null}

Like Wallaroo's JOIN_TOKEN it expires (24 h by default): the device refuses it after that.  It holds the
device's private key, so it is written 0600 and removed once joined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reconciler.errors import InvalidConfig, NotFound, Stalled

KIND = "JoinBundle"
MAX_BYTES = 1 << 20


class BundleExpired(Stalled):
    reason = "BundleExpired"


@dataclass(frozen=True)
class JoinBundle:
    device: str
    created: datetime
    expires: datetime
    config: dict[str, Any]
    ssh_key: str
    ssh_public_key: str
    known_hosts: str
    allowed_signers: str | None = None

    def to_json(self) -> bytes:
        doc = {"apiVersion": "fleet/v1", "kind": KIND, "device": self.device, "created": _iso(self.created),
               "expires": _iso(self.expires), "config": self.config, "sshKey": self.ssh_key,
               "sshPublicKey": self.ssh_public_key, "knownHosts": self.known_hosts,
               "allowedSigners": self.allowed_signers}
        return (json.dumps(doc, indent=2) + "\n").encode()

    def check_fresh(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        if now >= self.expires:
            raise BundleExpired(f"the join bundle of {self.device} expired at {_iso(self.expires)}: ask the fleet "
                                f"admin for a new one (reconciler device enroll {self.device} --force ...)")


def read(path: Path) -> JoinBundle:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise NotFound(f"{path}: cannot read the join bundle: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise InvalidConfig(f"{path}: not a join bundle (larger than {MAX_BYTES} bytes)")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise InvalidConfig(f"{path}: not a join bundle (invalid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or doc.get("apiVersion") != "fleet/v1":
        raise InvalidConfig(f"{path}: not a join bundle (kind {KIND}, apiVersion fleet/v1 expected)")
    try:
        bundle = JoinBundle(
            device=_text(doc, "device"), created=_time(doc, "created"), expires=_time(doc, "expires"),
            config=doc["config"] if isinstance(doc.get("config"), dict) else _missing("config"),
            ssh_key=_text(doc, "sshKey"), ssh_public_key=_text(doc, "sshPublicKey"),
            known_hosts=_text(doc, "knownHosts"),
            allowed_signers=doc.get("allowedSigners") if isinstance(doc.get("allowedSigners"), str) else None)
    except (KeyError, ValueError) as exc:
        raise InvalidConfig(f"{path}: join bundle field {exc}") from None
    return bundle


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        _missing(key)
    return str(value)


def _time(doc: dict[str, Any], key: str) -> datetime:
    try:
        when = datetime.fromisoformat(_text(doc, key).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key!r} is not an ISO 8601 time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _missing(key: str) -> Any:
    raise ValueError(f"{key!r} is missing or empty")


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
