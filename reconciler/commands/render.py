"""reconciler render --device NAME [PATH] [--rev REV]"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default=".", help="fleet directory, or a path inside a git repository")
    parser.add_argument("--device", required=True, help="device name (devices/NAME.yaml)")
    parser.add_argument("--rev", help="render at this git revision (read from git objects, no checkout)")


def run(args: argparse.Namespace) -> int:
    import yaml

    from reconciler.agent import detectors
    from reconciler.fleet.document import Loader
    from reconciler.fleet.resolve import render_device
    from reconciler.fleet.source import open_source
    from reconciler.fleet.view import FleetView

    state = render_device(FleetView(open_source(args.path, args.rev)), args.device)
    shown = state.to_dict()
    # exactly what the agent writes to DATA_DIR/detectors.yaml (Groundlight's layout), not a summary of it
    shown[detectors.FILE] = yaml.load(detectors.render(state.detectors, {m.name: m.version for m in state.models}),
                                      Loader=Loader)
    print(yaml.safe_dump(shown, sort_keys=False, default_flow_style=False), end="")
    return 0
