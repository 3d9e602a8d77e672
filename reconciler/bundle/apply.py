"""``bundle apply`` on the device: check the bundle, then run one normal agent pass with it as the medium.

    read (every member against manifest.json, its signature when trust.allowedSigners is set)
      -> refuse: another device's bundle, another branch, an older or already applied sequence,
         history the device lacks (--since), a commit older than the applied one, a rewind
      -> admit the verified blobs into the store -> Reconciler.run_once() with the bundle as medium
         (fetch into the mirror, fast-forward check, validate, pull from the layout, run, report)
      -> record the sequence once its commit is applied; write status-<device>.tar onto the medium

A refusal raises before anything the device runs or reports has changed.  The status file is written in
every case, so the operator learns what the device runs even from a refused bundle's trip.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygit2

from reconciler.agent.cycle import Cycle
from reconciler.agent.reconcile import Reconciler
from reconciler.artifacts.store import ArtifactStore
from reconciler.bundle import gitpack, ocilayout, statusfile
from reconciler.bundle.format import BundleManifest
from reconciler.bundle.medium import BundleMedium
from reconciler.bundle.unpack import Unpacked, read_bundle
from reconciler.durable import write_atomic
from reconciler.errors import NonFastForward, ReconcilerError, Stalled

log = logging.getLogger("reconciler.bundle")
APPLIED = "applied.json"


class BundleRefused(Stalled):
    reason = "BundleRefused"


@dataclass(frozen=True)
class ApplyResult:
    manifest: BundleManifest
    cycle: Cycle
    status_file: Path | None
    signer: str | None

    @property
    def applied(self) -> bool:
        return self.cycle.ready


def apply_bundle(reconciler: Reconciler, path: Path, *, status_dir: Path | None,
                 allowed_signers: Path | None = None) -> ApplyResult:
    """Apply ``path``; the status file goes into ``status_dir`` (None: not written)."""
    bundles = reconciler.data_dir / "bundles"
    bundles.mkdir(parents=True, exist_ok=True)
    for old in bundles.glob(".staging-*"):  # left by a power cut during an earlier apply
        shutil.rmtree(old, ignore_errors=True)
    staging = bundles / f".staging-{uuid.uuid4().hex[:12]}"
    store = ArtifactStore(reconciler.data_dir)
    store.discard()
    status_file: Path | None = None
    try:
        try:
            unpacked = read_bundle(path, staging, kind="FleetBundle", blob_sink=store.import_blob,
                                   allowed_signers=allowed_signers)
            git_dir = _check(reconciler, unpacked, path)
        except BaseException:
            store.discard()
            raise
        store.admit(unpacked.blobs)
        manifest = unpacked.manifest
        index = ocilayout.read_index(staging / "oci" / "index.json")
        reconciler.medium = BundleMedium(git_dir, index, store, branch=reconciler.config.branch,
                                         device=reconciler.config.device, label=f"bundle {path.name}",
                                         status_mirror=reconciler.writer.mirror,
                                         acked=manifest.refs.get(f"refs/heads/status/{reconciler.config.device}"))
        try:
            cycle = reconciler.run_once()
        finally:
            reconciler.medium = None
        if reconciler.state.applied_commit == manifest.commit:
            _record(bundles, manifest, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if status_dir is not None:
            status_file = _write_status(reconciler, status_dir)
    return ApplyResult(manifest, cycle, status_file, unpacked.signer)


def _check(reconciler: Reconciler, unpacked: Unpacked, path: Path) -> Path:
    """Refuse what this device must not apply; returns the bundle's git directory, ready to fetch from."""
    m = unpacked.manifest
    config = reconciler.config
    where = str(path)
    if config.device not in m.devices:
        shown = ", ".join(m.devices[:10]) + (" ..." if len(m.devices) > 10 else "")
        raise BundleRefused(f"{where}: made for {shown or 'no device'}, not for {config.device}")
    if m.branch != config.branch:
        raise BundleRefused(f"{where}: carries branch {m.branch!r}; this device follows {config.branch!r}")
    last = applied_record(reconciler.data_dir)
    if last is not None and m.sequence <= int(last.get("sequence", -1)):
        if m.sequence == last.get("sequence") and m.commit == last.get("commit"):
            raise BundleRefused(f"{where}: already applied (sequence {m.sequence}, commit {m.commit[:12]}, "
                                f"applied {last.get('appliedAt')})")
        raise BundleRefused(f"{where}: older than the bundle applied last (sequence {m.sequence}, "
                            f"applied sequence {last.get('sequence')})")
    mirror = reconciler.mirror
    if m.since is not None and pygit2.Oid(hex=m.since) not in mirror.repo:
        applied = reconciler.state.applied_commit
        raise BundleRefused(f"{where}: its history starts after {m.since[:12]}, which this device does not "
                            f"have (applied: {str(applied)[:12]}); make one with --since {str(applied)[:12]} "
                            "or without --since")
    branch_ref = f"refs/heads/{m.branch}"
    if m.refs.get(branch_ref) != m.commit:
        raise BundleRefused(f"{where}: manifest.json names {m.commit[:12]} but its refs say otherwise")
    git_dir = unpacked.staging / "repo.git"
    repo = gitpack.open_bundle_repo(git_dir, unpacked.packs(), m.refs, mirror.path / "objects")
    tip, applied_hex = pygit2.Oid(hex=m.commit), reconciler.state.applied_commit
    if applied_hex and pygit2.Oid(hex=applied_hex) in mirror.repo and m.commit != applied_hex:
        applied_oid = pygit2.Oid(hex=applied_hex)
        try:
            forward = bool(repo.descendant_of(tip, applied_oid))
            backward = bool(repo.descendant_of(applied_oid, tip))
        except (KeyError, ValueError, pygit2.GitError) as exc:
            raise BundleRefused(f"{where}: its history is incomplete ({exc})") from None
        if backward:
            raise BundleRefused(f"{where}: older than what is applied: it carries {m.commit[:12]}, an ancestor "
                                f"of the applied {applied_hex[:12]}")
        if not forward:
            raise NonFastForward(f"{where}: {m.branch} at {m.commit[:12]} is not a descendant of the applied "
                                 f"commit {applied_hex[:12]}: refusing to rewind history")
    return git_dir


def applied_record(data_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((data_dir / "bundles" / APPLIED).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _record(bundles: Path, manifest: BundleManifest, path: Path) -> None:
    doc = {"sequence": manifest.sequence, "commit": manifest.commit, "created": manifest.created,
           "file": path.name, "appliedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_atomic(bundles / APPLIED, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), mode=0o644)


def _write_status(reconciler: Reconciler, status_dir: Path) -> Path | None:
    try:
        return statusfile.write(reconciler.writer.repo, reconciler.config.device, status_dir)
    except (OSError, ReconcilerError) as exc:
        log.error("cannot write the status file into %s: %s", status_dir, exc)
        return None
