"""reconciler device-status [--socket PATH | --config FILE] [--format text|json]"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/reconciler/agent.yaml")
DEFAULT_SOCKET = Path("/var/lib/reconciler/agent.sock")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, help=f"the agent's API socket (default: from --config, else "
                                                     f"{DEFAULT_SOCKET})")
    parser.add_argument("--config", type=Path, help=f"agent configuration naming the socket (default {DEFAULT_CONFIG})")
    parser.add_argument("--format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    from reconciler.api import client, devicereport

    where = str(args.socket or _socket_from_config(args.config))
    code, status = client.get_json(where, "/v1/status")
    if code == 503:
        print(f"{status.get('device')}: agent running, {status.get('message')}")
        return 1
    _, models = client.get_json(where, "/v1/models")
    _, detectors = client.get_json(where, "/v1/detectors")
    _, health = client.get_json(where, "/healthz")
    if args.format == "json":
        print(json.dumps({"status": status, "models": models["models"], "detectors": detectors["detectors"],
                          "health": health}, indent=2))
    else:
        for line in devicereport.render(status, models["models"], detectors["detectors"], health):
            print(line)
    return 0 if status.get("phase") == "Ready" and health.get("alive") else 1


def _socket_from_config(path: Path | None) -> Path:
    from reconciler.agent import config as agentconfig
    from reconciler.api.server import is_unix

    if path is None and not os.access(DEFAULT_CONFIG, os.R_OK):  # 0600 root's: a group member reads the socket
        return DEFAULT_SOCKET
    config = agentconfig.load(path or DEFAULT_CONFIG)
    if config.api_listen is None:
        return config.data_dir / "agent.sock"
    unix = [e for e in config.api_listen if is_unix(e)]
    if not unix:
        from reconciler.errors import UsageError

        raise UsageError(f"{config.path}: api.listen has no unix socket; pass --socket")
    return Path(unix[0])
