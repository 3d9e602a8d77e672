"""The device's trust anchor: ``trust.allowedSigners`` of the agent config, read and parsed."""

from __future__ import annotations

from pathlib import Path

from reconciler.errors import NotFound
from reconciler.trust.allowed_signers import AllowedSigners, parse
from reconciler.trust.commits import Policy


def load_signers(path: Path) -> AllowedSigners:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise NotFound(f"{path}: cannot read the allowed signers file: {exc.strerror}") from None
    return parse(data, str(path))


def load_policy(path: Path, fleet_path: str = "") -> Policy:
    return Policy(load_signers(path), fleet_path)
