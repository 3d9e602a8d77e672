"""``device enroll`` and ``device remove``: the admin side of enrolment.

enroll: a key pair for the device (ssh-keygen, ed25519) -> its key and rule in gitolite-admin (commit, push)
-> ``devices/NAME.yaml`` in the fleet repo (commit, push) -> the join bundle.  When the fleet push fails after
the admin push, the grant is taken back, so a failure leaves no key that works without its device file.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from reconciler.durable import write_atomic
from reconciler.enrolment import gitolite
from reconciler.enrolment.bundle import JoinBundle
from reconciler.enrolment.gitcli import Clone
from reconciler.errors import ReconcilerError, Stalled, UsageError
from reconciler.git.knownhosts import host_lines

NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Access:
    """Where the fleet and the admin repo are, and how the admin reaches them."""

    repo: str
    admin_repo: str
    branch: str = "main"
    path: str = ""
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    gitolite_repo: str | None = None

    def fleet_name(self) -> str:
        """The fleet repo's name in gitolite.conf: the last part of its URL without ``.git``."""
        if self.gitolite_repo:
            return self.gitolite_repo
        tail = urllib.parse.urlsplit(self.repo).path if "://" in self.repo else self.repo.split(":", 1)[-1]
        return tail.strip("/").removesuffix(".git")

    def clone(self, url: str, into: Path, branch: str | None) -> Clone:
        return Clone(url, into, branch, self.ssh_key, self.known_hosts)


@dataclass(frozen=True)
class Enrolled:
    bundle_path: Path
    expires: datetime
    device_file: str  # "written" or "kept"


def check_name(device: str) -> None:
    if not NAME.match(device):
        raise UsageError(f"device name {device!r}: lower-case letters, digits, '.', '_' and '-' (at most 63)")


def device_document(device: str, labels: Mapping[str, str], groups: Sequence[str]) -> str:
    meta: dict[str, object] = {"name": device}
    if labels:
        meta["labels"] = dict(labels)
    spec: dict[str, object] = {"groups": list(groups)} if groups else {}
    return "# yaml-language-server: $schema=../schemas/device.schema.json\n" + yaml.safe_dump(
        {"apiVersion": "fleet/v1", "kind": "Device", "metadata": meta, "spec": spec}, sort_keys=False)


def enroll(device: str, access: Access, *, labels: Mapping[str, str], groups: Sequence[str], bundle_path: Path,
           data_dir: str, expires_in: timedelta, force: bool, allowed_signers: Path | None) -> Enrolled:
    check_name(device)
    if bundle_path.exists() and not force:
        raise UsageError(f"{bundle_path} exists: choose another --bundle or pass --force")
    with tempfile.TemporaryDirectory(prefix="reconciler-enroll-") as tmp:
        work = Path(tmp)
        known = _known_hosts(access)
        signers = allowed_signers.read_text() if allowed_signers is not None else None
        private, public = _keypair(work / "key", device)
        admin = access.clone(access.admin_repo, work / "admin", None)
        if gitolite.is_enrolled(admin, device) and not force:
            raise Stalled(f"{device} is enrolled already (keydir/{device}.pub in {access.admin_repo}); "
                          f"--force issues a new key and bundle, `device remove {device}` revokes it")
        fleet = access.clone(access.repo, work / "fleet", access.branch)
        rel = "/".join(p for p in (access.path.strip("/"), f"devices/{device}.yaml") if p)
        existing = fleet.read(rel)
        if existing is not None and (labels or groups):
            raise UsageError(f"{rel} exists: edit its labels and groups there, not with enroll")
        gitolite.grant(admin, device, access.fleet_name(), public)
        admin.commit_and_push(f"enroll {device}: its key and the rule for refs/heads/status/{device}")
        try:
            if existing is None:
                fleet.write(rel, device_document(device, labels, groups))
                fleet.commit_and_push(f"enroll device {device}")
        except ReconcilerError:
            gitolite.revoke(admin, device)
            admin.commit_and_push(f"take back the enrolment of {device}: its device file was not pushed")
            raise
        now = datetime.now(UTC).replace(microsecond=0)
        config: dict[str, object] = {"device": device,
                                     "repo": {"url": access.repo, "branch": access.branch, "path": access.path},
                                     "dataDir": data_dir}
        bundle = JoinBundle(device=device, created=now, expires=now + expires_in, config=config,
                            ssh_key=private, ssh_public_key=public, known_hosts=known, allowed_signers=signers)
        bundle_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(bundle_path, bundle.to_json(), mode=0o600)
    return Enrolled(bundle_path, bundle.expires, "kept" if existing is not None else "written")


def remove(device: str, access: Access, *, keep_device_file: bool) -> list[str]:
    """Revoke the key and the rule; delete the device file unless asked to keep it.  Returns what changed."""
    check_name(device)
    done = []
    with tempfile.TemporaryDirectory(prefix="reconciler-remove-") as tmp:
        admin = access.clone(access.admin_repo, Path(tmp) / "admin", None)
        if gitolite.is_enrolled(admin, device):
            gitolite.revoke(admin, device)
            admin.commit_and_push(f"remove device {device}: its key and rule")
            done.append(f"revoked the key and the rule of {device} in {access.admin_repo}")
        if not keep_device_file:
            fleet = access.clone(access.repo, Path(tmp) / "fleet", access.branch)
            rel = "/".join(p for p in (access.path.strip("/"), f"devices/{device}.yaml") if p)
            if fleet.read(rel) is not None:
                fleet.write(rel, None)
                fleet.commit_and_push(f"remove device {device}")
                done.append(f"deleted {rel}")
    if not done:
        raise Stalled(f"{device}: nothing to remove (no key in {access.admin_repo}"
                      f"{'' if keep_device_file else ', no device file'})")
    return done


def _keypair(path: Path, device: str) -> tuple[str, str]:
    res = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{device}@reconciler",
                          "-f", str(path)], capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise Stalled(f"ssh-keygen failed: {res.stderr.strip()}")
    return path.read_text(), Path(f"{path}.pub").read_text().strip()


def _known_hosts(access: Access) -> str:
    """The server's lines of the admin's known_hosts: the device must not trust the server on first use."""
    url = access.repo
    if "://" not in url:
        if ":" not in url or url.startswith("/"):
            return ""  # a local path: no host to verify
        url = "ssh://" + url.replace(":", "/", 1)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ssh":
        return ""
    known = access.known_hosts or Path.home() / ".ssh" / "known_hosts"
    if not known.exists():
        raise UsageError(f"no {known}: pass --known-hosts, the bundle must carry the server's host key")
    lines = host_lines(known, parts.hostname or "", parts.port or 22)
    if not lines:
        raise UsageError(f"{known} lists no key for {parts.hostname}:{parts.port or 22}")
    return "\n".join(lines) + "\n"
