"""Model signatures before a pulled version runs: ``spec.policy.modelSignatures`` of the commit being applied.

Keys come from the device (``trust.modelKeys``) and from ``.fleet/model-keys/<name>.pub`` at that commit
(trusted through the signed commits when ``trust.allowedSigners`` is set).  A verdict is kept per manifest
digest and key set, so a version's files are hashed once, not every cycle (``store verify`` checks them
against their digests afterwards).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.artifacts.layout import META
from reconciler.errors import NotFound, ReconcilerError, Untrusted
from reconciler.fleet.document import parse as parse_yaml

KEYS_DIR = ".fleet/model-keys"


@dataclass(frozen=True)
class Requirement:
    required: bool
    names: tuple[str, ...] | None  # None: every key known


class ModelGate:
    def __init__(self, device_keys: Mapping[str, Path], fleet_path: str) -> None:
        self.device_keys = dict(device_keys)
        self.fleet_path = fleet_path
        self._requirements: dict[str, Requirement] = {}
        self._verdicts: dict[tuple[str, tuple[str, ...]], str | ReconcilerError] = {}

    def _path(self, rel: str) -> str:
        return f"{self.fleet_path}/{rel}" if self.fleet_path else rel

    def requirement(self, repo: pygit2.Repository, commit: pygit2.Oid) -> Requirement:
        obj = repo.get(commit)
        try:
            blob = obj.tree[self._path("fleet.yaml")] if isinstance(obj, pygit2.Commit) else None
        except KeyError:
            blob = None
        if not isinstance(blob, pygit2.Blob):
            return Requirement(False, None)
        key = str(blob.id)
        if key not in self._requirements:
            doc, _ = parse_yaml("fleet.yaml", blob.data)
            spec: Any = doc.data.get("spec") if doc is not None and isinstance(doc.data, dict) else {}
            policy = (spec or {}).get("policy") or {}
            wanted = policy.get("modelSignatures") or {} if isinstance(policy, dict) else {}
            names = wanted.get("keys") if isinstance(wanted, dict) else None
            self._requirements[key] = Requirement(bool(isinstance(wanted, dict) and wanted.get("required")),
                                                  tuple(names) if isinstance(names, list) else None)
        return self._requirements[key]

    def keys(self, repo: pygit2.Repository, commit: pygit2.Oid, names: tuple[str, ...] | None) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        obj = repo.get(commit)
        try:
            tree = obj.tree[self._path(KEYS_DIR)] if isinstance(obj, pygit2.Commit) else None
        except KeyError:
            tree = None
        if isinstance(tree, pygit2.Tree):
            for entry in tree:
                if entry.name.endswith(".pub") and isinstance(entry, pygit2.Blob):
                    found[entry.name[:-4]] = entry.data
        for name, path in self.device_keys.items():  # the device's own key wins over the repo's
            try:
                found[name] = path.read_bytes()
            except OSError as exc:
                raise NotFound(f"trust.modelKeys.{name}: cannot read {path}: {exc.strerror}") from None
        return {n: pem for n, pem in found.items() if names is None or n in names}

    def check(self, repo: pygit2.Repository, commit: pygit2.Oid, model: str, version: str, directory: Path,
              manifest_digest: str) -> str | None:
        """The signer's key name when the policy requires a signature; raises Untrusted when it fails."""
        need = self.requirement(repo, commit)
        if not need.required:
            return None
        from reconciler.trust.models import ModelKey, verify_model

        keys = [ModelKey(n, pem) for n, pem in sorted(self.keys(repo, commit, need.names).items())]
        cache = (manifest_digest, tuple(f"{k.name}={k.pem!r}" for k in keys))
        if cache not in self._verdicts:
            try:
                self._verdicts[cache] = verify_model(directory, keys, ignore={META}).signer
            except Untrusted as exc:
                self._verdicts[cache] = Untrusted(f"model {model} {version} is not activated: {exc}")
        verdict = self._verdicts[cache]
        if isinstance(verdict, ReconcilerError):
            raise verdict
        return verdict
