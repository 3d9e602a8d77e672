"""reconciler bundle create | apply | import-status: updates for air-gapped devices on removable media."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="write a bundle: fleet history, the artifacts it pins, a signed manifest",
                       description="Write one file for offline devices: the fleet branch history, an OCI image "
                                   "layout of every artifact and image the selected devices need at --rev, and "
                                   "manifest.json with the sha256 of every member.")
    c.add_argument("--repo", required=True, help="the fleet repo: a path, or an ssh://, https://, file:// URL")
    c.add_argument("--rev", help="the revision to carry (default: the tip of --branch)")
    c.add_argument("--branch", default="main", help="the fleet branch (default: main)")
    c.add_argument("--path", default="", metavar="SUBDIR", help="where the fleet files live in the repo")
    c.add_argument("--device", action="append", default=[], metavar="NAME", help="a device to carry (repeatable)")
    c.add_argument("--group", action="append", default=[], metavar="NAME",
                   help="every member of a group (repeatable)")
    c.add_argument("--all", action="store_true", help="every device of the fleet")
    c.add_argument("--since", metavar="REV", help="carry only history after REV (the devices must have REV)")
    c.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the bundle file to write")
    c.add_argument("--sign-key", type=Path, metavar="KEY", help="SSH private key that signs manifest.json")
    c.add_argument("--zstd", action="store_true", help="compress with zstd (needs the zstandard package)")
    c.add_argument("--sequence", type=int, help="the bundle's sequence number (default: milliseconds since 1970)")
    c.add_argument("--ssh-key", type=Path, help="private key for an ssh repo URL")
    c.add_argument("--known-hosts", type=Path, help="verify the ssh server against this known_hosts file")
    c.add_argument("--cache-dir", type=Path, help="bare repo that caches a remote URL")
    c.add_argument("--status-repo", metavar="URL",
                   help="where the status branches live, when the fleet uses a separate statusRepo")
    c.add_argument("--credentials-file", type=Path, metavar="FILE",
                   help="YAML 'credentials' mapping (as in agent.yaml) for the registries' credentialsRef")
    c.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="deadline for each registry operation (default 300)")
    a = sub.add_parser("apply", help="apply a bundle on this device (one agent pass, no network)",
                       description="Check a bundle (member hashes, signature when trust.allowedSigners is "
                                   "set, sequence, fast-forward), run one agent pass from it, and write the "
                                   "device's status to status-<device>.tar on the medium.")
    a.add_argument("file", type=Path, metavar="FILE")
    a.add_argument("--config", type=Path, help="agent configuration file")
    a.add_argument("--status-dir", type=Path, metavar="DIR",
                   help="where to write status-<device>.tar (default: the bundle's directory)")
    a.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    i = sub.add_parser("import-status", help="push the status files devices wrote to their status branches",
                       description="Push each status-<device>.tar to status/<device> on the server, "
                                   "fast-forward only (never rewriting a branch).")
    i.add_argument("files", type=Path, nargs="+", metavar="FILE")
    i.add_argument("--repo", required=True, help="the fleet (or status) repo URL or path to push to")
    i.add_argument("--ssh-key", type=Path, help="private key for an ssh repo URL")
    i.add_argument("--known-hosts", type=Path, help="verify the ssh server against this known_hosts file")


def run(args: argparse.Namespace) -> int:
    action: str = args.action
    return {"create": _create, "apply": _apply, "import-status": _import}[action](args)


def _create(args: argparse.Namespace) -> int:
    from reconciler.artifacts.cli import load_credentials_file
    from reconciler.bundle.create import CreateRequest, Selection, create_bundle
    from reconciler.git.mirror import GitAuth

    if not (args.device or args.group or args.all):
        raise UsageError("bundle create: give --device NAME, --group NAME or --all")
    credentials = load_credentials_file(args.credentials_file) if args.credentials_file else {}
    manifest = create_bundle(CreateRequest(
        repo=args.repo, output=args.output, rev=args.rev, branch=args.branch, subdir=args.path, since=args.since,
        selection=Selection(tuple(args.device), tuple(args.group), args.all), sign_key=args.sign_key,
        zstd=args.zstd, sequence=args.sequence, auth=GitAuth(ssh_key=args.ssh_key, known_hosts=args.known_hosts),
        cache_dir=args.cache_dir, status_repo=args.status_repo, credentials=credentials, registry_timeout=args.timeout))
    blobs = sum(1 for m in manifest.members if m.blob_digest)
    print(f"{args.output}: {manifest.branch}@{manifest.commit[:12]} for {len(manifest.devices)} device(s), "
          f"{blobs} blob(s), {manifest.payload_bytes / 1024**2:.1f} MiB, sequence {manifest.sequence}"
          + (", signed" if args.sign_key else ""))
    return 0


def _apply(args: argparse.Namespace) -> int:
    import logging
    import sys

    from reconciler.agent import config as agentconfig
    from reconciler.agent.loop import single_instance
    from reconciler.agent.reconcile import Reconciler
    from reconciler.bundle.apply import apply_bundle

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = agentconfig.load(args.config)
    with single_instance(config.data_dir):
        result = apply_bundle(Reconciler(config), args.file, status_dir=args.status_dir or args.file.parent,
                              allowed_signers=config.allowed_signers)
    m, cycle = result.manifest, result.cycle
    signed = f", signed by {result.signer}" if result.signer else ""
    print(f"{args.file}: sequence {m.sequence}, {m.branch}@{m.commit[:12]}{signed}")
    problem = cycle.error or cycle.blocked
    print(f"{config.device}: {'Ready' if cycle.ready else 'not ready'}"
          + (f": {str(problem).splitlines()[0]}" if problem else ""))
    for name, message in sorted(cycle.failing.items()):
        print(f"  {name}: {message.splitlines()[0] if message else 'failed'}")
    if result.status_file is not None:
        print(f"status written to {result.status_file}")
    return 0 if cycle.ready else 1


def _import(args: argparse.Namespace) -> int:
    from reconciler.bundle.statusfile import import_status
    from reconciler.git.mirror import GitAuth

    auth = GitAuth(ssh_key=args.ssh_key, known_hosts=args.known_hosts)
    for path in args.files:
        done = import_status(path, args.repo, auth)
        what = f"pushed {done.pushed} status commit(s)" if done.pushed else "already on the server"
        print(f"{path}: status/{done.device} at {done.tip[:12]}: {what}")
    return 0
