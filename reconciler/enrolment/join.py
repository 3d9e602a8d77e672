"""``agent join BUNDLE``: install a join bundle on the device.

Next to the agent configuration (``/etc/reconciler/agent.yaml`` by default): ``id_ed25519``, ``known_hosts``
and ``allowed_signers`` (when the bundle has trust anchors), every file mode 0600 and written atomically, the
configuration last, so that a power cut leaves either no configuration or one whose files all exist.  An
expired bundle is refused, an existing configuration is kept unless ``force``, and the bundle file is removed
once installed (it holds the private key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from reconciler.durable import fsync_dir, write_atomic
from reconciler.enrolment import bundle as bundles
from reconciler.errors import Stalled


@dataclass(frozen=True)
class Joined:
    device: str
    config: Path
    files: tuple[Path, ...]


def join(bundle_path: Path, config_path: Path, *, force: bool) -> Joined:
    bundle = bundles.read(bundle_path)
    bundle.check_fresh()
    if config_path.exists() and not force:
        raise Stalled(f"{config_path} exists: this device is configured already; --force replaces it")
    etc = config_path.parent
    etc.mkdir(parents=True, exist_ok=True, mode=0o750)
    key = etc / "id_ed25519"
    files = [(key, bundle.ssh_key), (etc / "id_ed25519.pub", bundle.ssh_public_key + "\n")]
    config = dict(bundle.config)
    repo = dict(config.get("repo") or {})
    repo["sshKey"] = str(key)
    if bundle.known_hosts:
        files.append((etc / "known_hosts", bundle.known_hosts))
        repo["knownHosts"] = str(etc / "known_hosts")
    config["repo"] = repo
    if bundle.allowed_signers:
        files.append((etc / "allowed_signers", bundle.allowed_signers))
        config["trust"] = {**(config.get("trust") or {}), "allowedSigners": str(etc / "allowed_signers")}
    for path, text in files:
        write_atomic(path, text.encode(), mode=0o600)
    write_atomic(config_path, yaml.safe_dump(config, sort_keys=False).encode(), mode=0o600)
    bundle_path.unlink()
    fsync_dir(bundle_path.parent if str(bundle_path.parent) else Path("."))
    return Joined(bundle.device, config_path, tuple(p for p, _ in files))
