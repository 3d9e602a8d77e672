"""The agent as a long-running service: systemd readiness, watchdog and status line around the loop.

``READY=1`` goes out once the local state is loaded (the lock held, state.json read, the mirror opened): the
first pass may pull for minutes and systemd should not count that as a slow start.  ``WATCHDOG=1`` follows the
loop's liveness (agent/liveness.py), and ``STATUS=`` is rewritten after every pass.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from reconciler.agent.cycle import Cycle
from reconciler.agent.loop import Agent
from reconciler.api.metrics import Recorder
from reconciler.api.routes import App
from reconciler.api.server import ApiServer
from reconciler.api.view import build_view
from reconciler.service import logs
from reconciler.service.notify import Notifier, Watchdog

log = logging.getLogger("reconciler.service")


def run_service(agent: Agent, notifier: Notifier | None = None) -> int:
    notifier = notifier or Notifier()
    watchdog: Watchdog | None = None
    if notifier.watchdog_seconds:
        watchdog = Watchdog(notifier, agent.liveness, on_stall=lambda busy: log.error(
            "pass running for %.0fs (timeouts.pass %.0fs): treated as hung, watchdog pings stopped",
            busy, agent.liveness.deadline))
        watchdog.start()

    def report(cycle: Cycle, seconds: float) -> None:
        notifier.send(STATUS=status_line(agent, cycle, seconds))

    agent.observers.append(report)
    api = start_api(agent)
    notifier.send(READY="1", STATUS=f"{agent.config.device}: local state loaded, first pass under way",
                  MAINPID=str(os.getpid()))
    try:
        return agent.run()
    finally:
        notifier.send(STOPPING="1", STATUS="stopping")
        if api is not None:
            api.stop()
        if watchdog is not None:
            watchdog.stop()
        notifier.close()


def start_api(agent: Agent) -> ApiServer | None:
    """The local API on ``api.listen`` (default ``DATA_DIR/agent.sock``), fed a new view after every pass."""
    listen = agent.config.api_listen
    if listen is None:
        listen = (str(agent.config.data_dir / "agent.sock"),)
    if not listen:
        return None
    app = App(agent.config.device, agent.liveness, Recorder(), wake=agent.wake.set,
              mask=lambda text: agent.reconciler.mask(text))

    def publish(cycle: Cycle, seconds: float) -> None:
        app.recorder.record(cycle, seconds)
        reconciler = agent.reconciler
        if reconciler.last_status is not None:
            runtime = str(cycle.desired.config.get("runtime", "process")) if cycle.desired else None
            app.publish(build_view(agent.config.device, reconciler.last_status, reconciler.state.models,
                                   cycle.desired, cycle.observed, runtime))

    agent.observers.append(publish)
    server = ApiServer(app, listen)
    server.start()
    return server


def status_line(agent: Agent, cycle: Cycle, seconds: float) -> str:
    """One line for ``systemctl status``: ready or why not, the applied commit, models running."""
    state = agent.reconciler.state
    models: list[Mapping[str, object]] = [info for info in state.models.values() if "version" in info]
    running = sum(1 for info in models if info.get("state") == "running")
    reason = state.conditions.get("Ready", {}).get("reason", "Unknown")
    head = "Ready" if cycle.ready else f"Not ready ({reason})"
    applied = (state.applied_commit or "nothing")[:12]
    return f"{head}; applied {applied}; {running}/{len(models)} models running; last pass {seconds:.1f}s"


def configure_logging(agent: Agent, fmt: str, level: str) -> None:
    """Log lines in ``fmt`` (text | json), masked with the device's secrets; JSON lines name the device and
    the fleet commit of the pass under way (the applied one between passes)."""

    def context() -> dict[str, str | None]:
        current = agent.reconciler.current
        target = current.target if current is not None and agent.liveness.busy_for() is not None else None
        return {"device": agent.config.device,
                "commit": str(target) if target is not None else agent.reconciler.state.applied_commit}

    logs.configure(fmt, level, context=context, mask=lambda text: agent.reconciler.mask(text))
