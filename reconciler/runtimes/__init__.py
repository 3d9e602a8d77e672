"""Runtimes, registered in one dict: adding a runtime is one module and one line here.

A factory takes the agent's data dir and its runtime options (a mapping from the agent configuration:
``dockerHost``, the credential store under ``credentials``, ...) and returns a ``Runtime``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from reconciler.errors import InvalidConfig
from reconciler.runtimes.base import Runtime

# name -> "module:factory"; imported on first use so that the CLI starts fast.
RUNTIMES: dict[str, str] = {
    "process": "reconciler.runtimes.process:ProcessRuntime",
    "docker": "reconciler.runtimes.docker:DockerRuntime",
}


def get_runtime(name: str, data_dir: Path, options: Mapping[str, Any]) -> Runtime:
    target = RUNTIMES.get(name)
    if target is None:
        raise InvalidConfig(f"unknown runtime {name!r} (known: {', '.join(sorted(RUNTIMES))})")
    module_name, _, attr = target.partition(":")
    factory: Callable[[Path, Mapping[str, Any]], Runtime] = getattr(importlib.import_module(module_name), attr)
    return factory(data_dir, options)
