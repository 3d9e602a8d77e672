"""``reconciler pull REF --data-dir DIR``: pull, verify and activate one artifact into a store."""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.artifacts.cli import add_registry_arguments, client_from_args, progress_printer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ref", metavar="REF", help="REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:...")
    parser.add_argument("--data-dir", type=Path, required=True, help="the store (the agent's data dir)")
    parser.add_argument("--model", help="model name to activate as (default: last part of the repository)")
    parser.add_argument("--version", help="version to activate as (default: the tag, or the digest's start)")
    add_registry_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from reconciler.artifacts.reference import Reference
    from reconciler.artifacts.store import ArtifactStore, human

    ref = Reference.parse(args.ref)
    model = args.model or ref.repository.rsplit("/", 1)[-1]
    version = args.version or ref.tag or (ref.digest or "")[7:19] or "latest"
    client = client_from_args(args, args.ref)
    result = ArtifactStore(args.data_dir).pull(args.ref, client, model=model, version=version,
                                               progress=progress_printer(f"pull {model} {version}"))
    if result.cached:
        print(f"{model} {version} already active ({result.manifest_digest})")
    else:
        rate = result.bytes_downloaded / max(result.seconds, 1e-6)
        print(f"pulled {model} {version} ({result.manifest_digest}): {human(result.bytes_downloaded)} "
              f"downloaded in {result.seconds:.1f}s ({human(rate)}/s)")
    print(result.path)
    return 0
