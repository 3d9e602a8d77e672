"""Activation: one verified version laid out as ``models/<name>/<version>``, switched in atomically.

Kept apart from ``store`` because it is the one writer of a version's directory (hard links or copies of
plain layers, extracted archives, the metadata file ``META``) and of the link that makes it current;
the store decides what to pull, this decides how a pulled version goes live.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

from reconciler.artifacts.archive import extract
from reconciler.artifacts.layout import META, StoreLayout
from reconciler.artifacts.manifest import Manifest, safe_relative_path
from reconciler.artifacts.reference import Reference
from reconciler.durable import fsync_dir
from reconciler.errors import Stalled


def activate(store: StoreLayout, model: str, version: str, pinned: Reference, manifest: Manifest, *,
             max_bytes: int, max_ratio: float = 0) -> Path:
    """Build the version's directory from blobs already in ``store``, then point its link at it.

    Archives may expand to ``max_bytes`` in all, and each to at most ``max_ratio`` times its compressed
    size (0: no ratio cap): a 1 MB gzip of 1 GiB of zeros is refused before the cap is written past."""
    model_dir = store.models / model
    model_dir.mkdir(parents=True, exist_ok=True)
    link = model_dir / version
    if link.exists() and not link.is_symlink():
        raise Stalled(f"{link} exists and is not a link made by the store; move it away")
    build = model_dir / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    build.mkdir()
    try:
        files: dict[str, str] = {}
        links: dict[str, str] = {}
        budget = max_bytes
        for layer in manifest.layers:
            blob = store.blob_path(layer.digest)
            kind = layer.is_archive
            if kind:
                cap = min(budget, int(max_ratio * layer.size)) if max_ratio else budget
                out = extract(blob, build, compression=kind, max_bytes=cap,
                              what=f"{pinned}: layer {layer.digest}")
                budget -= out.size
                files.update(out.files)
                links.update(out.links)
                continue
            title = safe_relative_path(layer.title or "", f"{pinned}: layer title")
            dest = build / title
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob, dest)
            except OSError:  # another filesystem, or links not supported
                shutil.copyfile(blob, dest)
                os.chmod(dest, 0o444)
            files[title] = layer.digest
        meta = {
            "model": model,
            "version": version,
            "reference": str(pinned),
            "manifestDigest": manifest.digest,
            "config": manifest.config.digest if manifest.config else None,
            "layers": [d.digest for d in manifest.layers],
            "files": files,
            "links": links,
            "activatedAt": time.time(),
        }
        with open(build / META, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(build)
        final = model_dir / f".v-{version}-{manifest.digest[7:19]}-{uuid.uuid4().hex[:6]}"
        os.rename(build, final)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    old = Path(os.readlink(link)) if link.is_symlink() else None
    tmp_link = model_dir / f".link-{version}-{uuid.uuid4().hex[:8]}"
    os.symlink(final.name, tmp_link)
    os.replace(tmp_link, link)
    fsync_dir(model_dir)
    if old is not None and old.name != final.name:
        shutil.rmtree(model_dir / old.name, ignore_errors=True)
    return link
