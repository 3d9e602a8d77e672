"""The one interface every runtime satisfies.  The reconcile loop only speaks to this."""

from __future__ import annotations

from typing import Protocol

from reconciler.model import HealthResult, Observed, Workload


class Runtime(Protocol):
    name: str
    # True when two versions of a model can run at once even with a fixed ``port`` (Docker publishes each
    # container on its own host port), so a replacement starts the new version before stopping the old.
    parallel_ports: bool

    def observe(self, device: str, with_stats: bool = True) -> list[Observed]:
        """Every workload this runtime runs for ``device`` and that carries our marks (labels, state files).
        Anything without our marks is never returned, and so never touched.  ``with_stats=False`` may leave
        memory and CPU unmeasured where measuring is slow (dockerd samples stats once a second)."""
        ...

    def start(self, workload: Workload) -> Observed:
        """Start ``workload`` next to whatever runs; raises a ReconcilerError subclass on failure."""
        ...

    def check_health(self, workload: Workload, observed: Observed) -> HealthResult:
        """Block until the workload is healthy or its health check's timeout passes."""
        ...

    def stop(self, observed: Observed) -> None:
        """Stop and remove one workload; stopping one that is already gone is not an error."""
        ...

    def reload(self, observed: Observed) -> None:
        """Tell a running workload its detectors changed (SIGHUP)."""
        ...

    def unsupported(self, workload: Workload) -> list[str]:
        """Settings of ``workload`` this runtime cannot honour, one sentence each: reported as warnings on the
        model in status, never dropped silently."""
        ...

    def logs(self, observed: Observed, lines: int = 20) -> str:
        """The workload's last output lines, for failure messages (secrets are masked by the caller)."""
        ...
