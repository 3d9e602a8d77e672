"""``bundle create`` on the admin side: which devices, what they need at ``--rev``, and the file itself.

    open the fleet repo (a path, or a URL fetched into the views' cache, status branches included)
      -> select devices (--device, --group, --all) and render each at --rev (an invalid fleet is refused)
      -> copy every artifact they pin (and, for docker devices, every image) from its registry into an
         OCI image layout, each blob verified against its digest on the way
      -> pack the fleet commits --since..--rev and the selected devices' status tips
      -> manifest.json (sha256 of every member), its signature (--sign-key), one tar (optionally zstd)
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pygit2

from reconciler.artifacts.registry import RegistryClient
from reconciler.bundle import bundlefile, gitpack, signature
from reconciler.bundle.format import MANIFEST, SIGNATURE, BundleManifest, file_member
from reconciler.bundle.ocilayout import LayoutWriter
from reconciler.credentials import CredentialStore
from reconciler.errors import NotFound, UsageError
from reconciler.fleet.resolve import render_device
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FleetView
from reconciler.git.mirror import GitAuth
from reconciler.model import DesiredState
from reconciler.views.fleetrepo import FleetRepo, open_fleet_repo


@dataclass(frozen=True)
class Selection:
    devices: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    all: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"devices": list(self.devices), "groups": list(self.groups), "all": self.all}


@dataclass(frozen=True)
class CreateRequest:
    repo: str
    output: Path
    selection: Selection
    rev: str | None = None
    branch: str = "main"
    subdir: str = ""
    since: str | None = None
    sign_key: Path | None = None
    zstd: bool = False
    sequence: int | None = None
    auth: GitAuth = field(default_factory=GitAuth)
    cache_dir: Path | None = None
    status_repo: str | None = None  # where the status branches live when not in the fleet repo (statusRepo)
    credentials: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    registry_timeout: float = 300.0


def create_bundle(req: CreateRequest) -> BundleManifest:
    fleet = open_fleet_repo(req.repo, branch=req.branch, subdir=req.subdir, auth=req.auth, cache_dir=req.cache_dir)
    repo = fleet.repo
    commit = _commit(fleet, req.rev)
    since = _commit(fleet, req.since) if req.since else None
    if since is not None and since != commit and not repo.descendant_of(commit, since):
        raise UsageError(f"--since {req.since}: {str(since)[:12]} is not an ancestor of --rev {str(commit)[:12]}")
    states = _select(FleetView(GitSource(repo, commit, fleet.subdir)), req.selection)
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=req.output.parent) as tmp:
        staging = Path(tmp)
        layout = LayoutWriter(staging / "oci")
        clients: dict[str | None, RegistryClient] = {}
        store = CredentialStore(req.credentials)
        for state in states:
            docker = state.config.get("runtime") == "docker"
            for m in state.models:
                client = clients.get(m.registry)
                if client is None:
                    registry = state.registries.get(m.registry) if m.registry else None
                    credential = store.resolve(registry.credentials_ref) if registry else None
                    client = clients[m.registry] = RegistryClient(registry, credential,
                                                                  deadline_seconds=req.registry_timeout)
                for ref in (m.artifact, m.image if docker else None):
                    if ref:
                        layout.add(ref, client, used_by=f"{m.name}={m.version}")
        layout.finish()
        tips = {f"refs/heads/{fleet.branch}": commit}
        gitpack.write_pack(repo, [commit], staging / "git", since)
        statuses = fleet if req.status_repo is None else open_fleet_repo(
            req.status_repo, branch=req.branch, auth=req.auth)
        acks = {f"refs/heads/status/{s.device}": tip for s in states
                if (tip := statuses.status_tip(s.device)) is not None}
        if acks:  # the server's status tips: the devices learn which of their status commits arrived
            gitpack.write_pack(statuses.repo, acks.values(), staging / "git")
        tips.update(acks)
        members = [file_member(p, p.relative_to(staging).as_posix()) for p in _files(staging)]
        manifest = BundleManifest(
            kind="FleetBundle", sequence=req.sequence if req.sequence is not None else int(time.time() * 1000),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), branch=fleet.branch, commit=str(commit),
            since=str(since) if since else None, selection=req.selection.to_dict(),
            devices=tuple(s.device for s in states), refs={k: str(v) for k, v in tips.items()},
            members=tuple(members))
        raw = manifest.to_json()
        with bundlefile.writer(req.output, zstd=req.zstd) as tar:
            bundlefile.add_bytes(tar, MANIFEST, raw)
            if req.sign_key is not None:
                bundlefile.add_bytes(tar, SIGNATURE, signature.sign(raw, req.sign_key))
            for member in members:
                bundlefile.add_file(tar, member.path, staging / member.path)
    return manifest


def _commit(fleet: FleetRepo, rev: str | None) -> pygit2.Oid:
    if rev is None or rev == fleet.branch:
        return fleet.main_tip()
    for candidate in (rev, f"refs/remotes/origin/{rev}"):
        try:
            return fleet.repo.revparse_single(candidate).peel(pygit2.Commit).id
        except (KeyError, ValueError, pygit2.GitError):
            continue
    raise NotFound(f"{fleet.label}: no revision {rev!r}")


def _select(view: FleetView, selection: Selection) -> list[DesiredState]:
    known = view.device_names()
    unknown = [d for d in selection.devices if d not in known]
    if unknown:
        raise NotFound(f"unknown device(s) {', '.join(unknown)} at {view.source.label}")
    wanted = set(known) if selection.all or selection.groups else set(selection.devices)
    states = [render_device(view, d) for d in sorted(wanted)]
    if not selection.all:
        states = [s for s in states if s.device in selection.devices or set(s.groups) & set(selection.groups)]
    if not states:
        raise UsageError("the selection names no device: give --device, --group (with members) or --all")
    return states


def _files(staging: Path) -> Sequence[Path]:
    # the small members first: a device learns what the bundle is before the bulk of it streams by
    small = [staging / "oci" / "oci-layout", staging / "oci" / "index.json", *sorted((staging / "git").iterdir())]
    return [*small, *sorted((staging / "oci" / "blobs" / "sha256").iterdir())]
