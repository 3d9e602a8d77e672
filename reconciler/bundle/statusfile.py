"""Status on the medium: the device's status chain as ``status-<device>.tar``, and ``import-status`` pushing
it to the server's ``status/<device>`` branch.

The file holds the whole chain (status commits are a few hundred bytes each), so it imports into a server
that has none of it as well as into one that has most.  Import only ever fast-forwards: a file whose chain
lacks commits the server has is refused (the device's other path, the network, got there first and the
device will continue that chain once it learns of it), and a file the server already has changes nothing.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pygit2

from reconciler.bundle import bundlefile, gitpack
from reconciler.bundle.format import MANIFEST, BundleManifest, file_member
from reconciler.bundle.unpack import read_bundle
from reconciler.errors import IntegrityError, NonFastForward
from reconciler.git.mirror import FleetMirror, GitAuth, ref_target


@dataclass(frozen=True)
class Imported:
    device: str
    tip: str
    pushed: int  # status commits the server did not have


def file_name(device: str) -> str:
    return f"status-{device}.tar"


def write(repo: pygit2.Repository, device: str, out_dir: Path) -> Path | None:
    """Write ``status-<device>.tar`` into ``out_dir``; None when the device has no status commit yet."""
    ref = f"refs/heads/status/{device}"
    tip = ref_target(repo, ref)
    if tip is None:
        return None
    with tempfile.TemporaryDirectory(prefix="reconciler-status-") as tmp:
        packs = Path(tmp)
        gitpack.write_pack(repo, [tip], packs)
        members = [file_member(p, f"git/{p.name}") for p in sorted(packs.iterdir())]
        manifest = BundleManifest(
            kind="StatusBundle", sequence=int(time.time() * 1000),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), branch=f"status/{device}",
            commit=str(tip), members=tuple(members), refs={ref: str(tip)}, devices=(device,))
        target = out_dir / file_name(device)
        with bundlefile.writer(target) as tar:
            bundlefile.add_bytes(tar, MANIFEST, manifest.to_json())
            for m in members:
                bundlefile.add_file(tar, m.path, packs / m.path.removeprefix("git/"))
    return target


def import_status(path: Path, url: str, auth: GitAuth, *, timeout: float = 60.0) -> Imported:
    """Push the chain in the status file ``path`` to ``url``'s status branch, fast-forward only."""
    with tempfile.TemporaryDirectory(prefix="reconciler-import-") as tmp:
        unpacked = read_bundle(path, Path(tmp) / "in", kind="StatusBundle")
        m = unpacked.manifest
        if len(m.devices) != 1 or m.branch != f"status/{m.devices[0]}":
            raise IntegrityError(f"{path}: a status file names one device and its status branch")
        device = m.devices[0]
        ref = f"refs/heads/status/{device}"
        if m.refs.get(ref) != m.commit:
            raise IntegrityError(f"{path}: manifest.json names {m.commit[:12]} but its refs say otherwise")
        carried = Path(tmp) / "carried.git"
        gitpack.open_bundle_repo(carried, unpacked.packs(), m.refs, None)
        mirror = FleetMirror(Path(tmp) / "server.git", url, "main", auth, timeout=timeout)
        server = mirror.fetch_refs([ref])[ref]
        tip = mirror.fetch_objects(str(carried), [ref])[ref]
        assert tip is not None  # open_bundle_repo created the ref
        if server is not None:
            if mirror.is_descendant(server, tip):
                return Imported(device, str(tip), 0)
            if not mirror.is_descendant(tip, server):
                raise NonFastForward(
                    f"{path}: the server's status/{device} has commits this file does not (at "
                    f"{str(server)[:12]}); refusing to rewrite it. Import a newer status file from the device")
        new = len(mirror.commits_between(tip, [server] if server is not None else []))
        mirror.repo.references.create(ref, tip, force=True)
        mirror.push_ref(ref, ref)
        return Imported(device, str(tip), new)
