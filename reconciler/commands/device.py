"""reconciler device enroll NAME ... | reconciler device remove NAME ...  (the admin side of enrolment)"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="device_command", metavar="enroll|remove", parser_class=type(parser),
                                required=True)
    enroll = sub.add_parser("enroll", help="register a device and write its join bundle",
                            description="Write devices/NAME.yaml, generate the device's ed25519 key, register the "
                                        "key and the rule RW+ refs/heads/status/NAME$ in gitolite-admin, and write "
                                        "a join bundle (mode 0600) that expires.")
    enroll.add_argument("name")
    enroll.add_argument("--labels", nargs="*", default=[], metavar="K=V", help="labels of the new device file")
    enroll.add_argument("--groups", nargs="*", default=[], metavar="GROUP", help="groups the device file names")
    enroll.add_argument("--bundle", type=Path, help="where the bundle goes (default: ./NAME.join.json)")
    enroll.add_argument("--expires", default="24h", metavar="DURATION",
                        help="the bundle is refused after this long (default 24h, as Wallaroo's JOIN_TOKEN)")
    enroll.add_argument("--data-dir", default="/var/lib/reconciler", help="the device's data dir (default %(default)s)")
    enroll.add_argument("--allowed-signers", type=Path,
                        help="trust anchors for the device (an allowed_signers file), carried in the bundle")
    enroll.add_argument("--force", action="store_true", help="enrol again: a new key, a new bundle")
    remove = sub.add_parser("remove", help="revoke a device's key and rule (and delete its device file)",
                            description="Delete keydir/NAME.pub and the device's rule from gitolite-admin, and "
                                        "devices/NAME.yaml from the fleet repo; its status branch stays as history.")
    remove.add_argument("name")
    remove.add_argument("--keep-device-file", action="store_true", help="only revoke the access")
    for p in (enroll, remove):
        p.add_argument("--repo", required=True, help="the fleet repository URL, as devices reach it")
        p.add_argument("--admin-repo", required=True, help="the gitolite-admin repository URL")
        p.add_argument("--branch", default="main", help="the fleet branch (default main)")
        p.add_argument("--path", default="", metavar="SUBDIR", help="where the fleet files live in the repo")
        p.add_argument("--gitolite-repo", help="the fleet repo's name in gitolite.conf (default: from --repo)")
        p.add_argument("--ssh-key", type=Path, help="the admin's private key (default: your ssh setup)")
        p.add_argument("--known-hosts", type=Path,
                       help="known_hosts listing the server (default ~/.ssh/known_hosts): the bundle carries its line")


def run(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from reconciler.enrolment.enroll import Access, enroll, remove
    from reconciler.errors import UsageError
    from reconciler.quantities import parse_duration

    access = Access(repo=args.repo, admin_repo=args.admin_repo, branch=args.branch, path=args.path,
                    ssh_key=args.ssh_key, known_hosts=args.known_hosts, gitolite_repo=args.gitolite_repo)
    if args.device_command == "remove":
        for line in remove(args.name, access, keep_device_file=args.keep_device_file):
            print(line)
        return 0
    seconds = parse_duration(args.expires)
    if seconds is None or seconds <= 0:
        raise UsageError(f"--expires {args.expires!r}: expected a duration like 30m, 24h or 7d")
    labels = {}
    for item in args.labels:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--labels {item!r}: expected KEY=VALUE")
        labels[key] = value
    done = enroll(args.name, access, labels=labels, groups=args.groups,
                  bundle_path=args.bundle or Path(f"{args.name}.join.json"), data_dir=args.data_dir,
                  expires_in=timedelta(seconds=seconds), force=args.force, allowed_signers=args.allowed_signers)
    print(f"enrolled {args.name}: key and rule in {args.admin_repo}, devices/{args.name}.yaml {done.device_file}")
    print(f"join bundle {done.bundle_path} (mode 0600, holds the device's private key) expires "
          f"{done.expires.isoformat(timespec='seconds')}; on the device: reconciler agent join {done.bundle_path}")
    return 0
