"""OCI artifact store: verified, resumable, deduplicated pulls over oras-py's registry session.

The names below load on first use, so that the CLI's verbs can import this package's light modules
(``cli``, ``reference``) without pulling in oras and requests before ``run``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.artifacts.reference import Reference
    from reconciler.artifacts.registry import RegistryClient
    from reconciler.artifacts.store import ArtifactStore, GcResult, PullResult

_WHERE = {
    "Reference": "reconciler.artifacts.reference",
    "RegistryClient": "reconciler.artifacts.registry",
    "ArtifactStore": "reconciler.artifacts.store",
    "GcResult": "reconciler.artifacts.store",
    "PullResult": "reconciler.artifacts.store",
}

__all__ = ["ArtifactStore", "GcResult", "PullResult", "Reference", "RegistryClient"]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'reconciler.artifacts' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
