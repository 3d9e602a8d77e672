"""Command-line plumbing shared by ``publish``, ``pull`` and ``store``: registry options, credentials,
and a progress line on a terminal.  Light to import: oras loads only when a client is built."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.credentials import Credential, CredentialStore
from reconciler.errors import InvalidConfig, UsageError

if TYPE_CHECKING:
    from reconciler.artifacts.registry import RegistryClient


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registry access")
    group.add_argument("--credentials", metavar="NAME",
                       help="credential name, resolved from --credentials-file or RECONCILER_CRED_<NAME>_* "
                            "environment variables (USERNAME/PASSWORD or TOKEN)")
    group.add_argument("--credentials-file", metavar="FILE", type=Path,
                       help="YAML file with a 'credentials' mapping as in the agent configuration")
    group.add_argument("--plain-http", action="store_true", help="speak HTTP to a non-loopback registry")
    group.add_argument("--ca-file", metavar="PEM", help="CA bundle to verify the registry's TLS certificate")
    group.add_argument("--skip-tls-verify", action="store_true", help="no TLS verification (tests only)")
    group.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                       help="deadline for each registry operation, retries included (default 300)")
    group.add_argument("--min-rate", type=float, default=1024.0, metavar="BYTES_PER_SECOND",
                       help="cut and resume a download slower than this after 30 s (default 1024; 0: off)")


def load_credentials_file(path: Path) -> dict[str, Any]:
    """The ``credentials`` mapping of a YAML file laid out as in the agent configuration."""
    import yaml

    from reconciler.fleet.document import Loader  # YAML 1.2 core, as every file we read

    try:
        doc = yaml.load(path.read_text(), Loader=Loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidConfig(f"{path}: cannot read credentials ({type(exc).__name__})") from None
    section = doc.get("credentials", doc) if isinstance(doc, dict) else None
    if not isinstance(section, dict):
        raise InvalidConfig(f"{path}: expected a 'credentials' mapping")
    return section


def _credential(args: argparse.Namespace) -> Credential | None:
    if not args.credentials:
        return None
    entries = load_credentials_file(args.credentials_file) if args.credentials_file is not None else {}
    return CredentialStore(entries).resolve(args.credentials)


def client_from_args(args: argparse.Namespace, ref: str) -> RegistryClient:
    """A client for ``ref``'s registry from the command-line options."""
    from reconciler.artifacts.reference import Reference
    from reconciler.artifacts.registry import RegistryClient
    from reconciler.model import RegistryConfig

    if args.credentials_file is not None and not args.credentials:
        raise UsageError("--credentials-file needs --credentials NAME")
    parsed = Reference.parse(ref)
    config = None
    if args.plain_http or args.ca_file or args.skip_tls_verify:
        config = RegistryConfig(alias=parsed.registry, host=parsed.host, port=parsed.port,
                                credentials_ref=args.credentials, skip_tls_verify=args.skip_tls_verify,
                                plain_http=args.plain_http, ca_file=args.ca_file)
    return RegistryClient(config, _credential(args), deadline_seconds=args.timeout,
                          min_bytes_per_second=args.min_rate)


def progress_printer(label: str) -> Callable[[int, int], None] | None:
    """A ``(done, total)`` callback drawing one line on a terminal; None when stderr is not one."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and done < total:
            return
        last[0] = now
        rate = done / max(now - started, 1e-6) / 1024**2
        sys.stderr.write(f"\r{label}: {done / 1024**2:8.1f} / {total / 1024**2:.1f} MiB  {rate:7.1f} MiB/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
