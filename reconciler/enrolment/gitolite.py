"""A device's access in a gitolite-admin clone: its public key and its rule, in files of their own.

    keydir/<device>.pub                    the device's key (gitolite user <device>)
    conf/reconciler-devices/<device>.conf  repo <fleet>: R = <device>; RW+ refs/heads/status/<device>$ = <device>
    conf/gitolite.conf                     gains one line, include "reconciler-devices/*.conf", once

Rules the operator wrote by hand are never rewritten: enrolment adds files and removal deletes them.
"""

from __future__ import annotations

from reconciler.enrolment.gitcli import Clone

INCLUDE = 'include "reconciler-devices/*.conf"'


def key_path(device: str) -> str:
    return f"keydir/{device}.pub"


def rule_path(device: str) -> str:
    return f"conf/reconciler-devices/{device}.conf"


def rule(device: str, repo: str) -> str:
    return (f"# written by reconciler device enroll: {device} reads {repo} and writes only its status branch\n"
            f"repo {repo}\n"
            f"    R                                 = {device}\n"
            f"    RW+ refs/heads/status/{device}$   = {device}\n")


def is_enrolled(admin: Clone, device: str) -> bool:
    return admin.read(key_path(device)) is not None


def grant(admin: Clone, device: str, repo: str, public_key: str) -> None:
    conf = admin.read("conf/gitolite.conf") or ""
    if INCLUDE not in conf.splitlines():
        admin.write("conf/gitolite.conf", conf.rstrip("\n") + f"\n\n{INCLUDE}\n")
    admin.write(key_path(device), public_key.strip() + "\n")
    admin.write(rule_path(device), rule(device, repo))


def revoke(admin: Clone, device: str) -> None:
    admin.write(key_path(device), None)
    admin.write(rule_path(device), None)
