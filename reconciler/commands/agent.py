"""reconciler agent --config FILE [--once]  |  reconciler agent join BUNDLE [--config FILE] [--force] [--start]"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="agent configuration file (environment variables RECONCILER_* override it)")
    parser.add_argument("--once", action="store_true",
                        help="one cycle, then exit: 0 when the device ended it Ready, 1 otherwise")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", choices=["text", "json"],
                        help="text, or json: one object per line (default: logFormat of the config, else text)")
    sub = parser.add_subparsers(dest="agent_command", metavar="join", parser_class=type(parser))
    join = sub.add_parser("join", help="install a join bundle from `reconciler device enroll` on this device",
                          description="Install a join bundle (agent config, ssh key, known_hosts, trust anchors), "
                                      "files mode 0600; refuses an expired bundle and removes it once installed.")
    join.add_argument("bundle", help="the bundle file")
    join.add_argument("--config", dest="join_config", default="/etc/reconciler/agent.yaml",
                      help="where the agent configuration goes; key files go beside it (default: %(default)s)")
    join.add_argument("--force", action="store_true", help="replace an existing configuration")
    join.add_argument("--start", action="store_true",
                      help="then run the agent in this process (where there is no systemd, e.g. a container)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if getattr(args, "agent_command", None) == "join":
        return _join(args)

    from reconciler.agent import config as agentconfig
    from reconciler.agent.loop import Agent, single_instance
    from reconciler.service.daemon import configure_logging

    config = agentconfig.load(Path(args.config) if args.config else None)
    with single_instance(config.data_dir):
        agent = Agent(config)
        configure_logging(agent, args.log_format or config.log_format, args.log_level)
        if config.offline_watch is not None:
            from reconciler.bundle.watch import OfflineWatch

            OfflineWatch(agent, config.offline_watch).attach()
        if args.once:
            agent.run_hooks()
            cycle = agent.run_pass()
            for line in _summary(agent):
                print(line)
            return 0 if cycle.ready else 1
        from reconciler.service.daemon import run_service

        return run_service(agent)


def _join(args: argparse.Namespace) -> int:
    from pathlib import Path

    from reconciler.enrolment.join import join

    joined = join(Path(args.bundle), Path(args.join_config), force=args.force)
    print(f"joined as {joined.device}: {joined.config} (and {', '.join(p.name for p in joined.files)}); "
          f"the bundle {args.bundle} was removed")
    if not args.start:
        print("start the agent: systemctl enable --now reconciler-agent "
              f"(or: reconciler agent --config {joined.config})")
        return 0
    args.agent_command, args.config = None, args.join_config
    return run(args)


def _summary(agent: object) -> list[str]:
    from reconciler.agent.loop import Agent

    assert isinstance(agent, Agent)
    state = agent.reconciler.state
    cond = state.conditions.get("Ready", {})
    applied = state.applied_commit[:12] if state.applied_commit else "nothing yet"
    lines = [f"{agent.config.device}: {'Ready' if cond.get('status') == 'True' else 'not ready'} "
             f"({cond.get('reason', '')}) applied {applied}"]
    if cond.get("status") != "True" and cond.get("message"):
        lines.append(f"  {cond['message']}")
    if state.push_refused:
        lines.append(f"  status push refused: {state.push_error}")
    for name, info in sorted(state.models.items()):
        version = info.get("version") or info.get("desiredVersion") or "-"
        wanted = info.get("desiredVersion")
        also = f" (desired {wanted})" if wanted and wanted != version else ""
        lines.append(f"  {name} {version} {info.get('state') or 'pending'}{also}")
    return lines
