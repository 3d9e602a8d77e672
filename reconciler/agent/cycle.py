"""What one pass learned, shared by the pass (``reconcile.py``) and the executor (``executor.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pygit2

from reconciler.agent.plan import Action
from reconciler.agent.poll import Polled
from reconciler.errors import ReconcilerError
from reconciler.model import DesiredState, Observed, Workload

if TYPE_CHECKING:
    from reconciler.trust.commits import Verdict


@dataclass
class Cycle:
    """What one pass learned; the summarizer turns it into phase and conditions."""

    tip: pygit2.Oid | None = None
    polled: Polled | None = None  # where the tip came from (beacon, a mirror, the origin)
    target: pygit2.Oid | None = None  # the commit whose desired state this pass applies
    key: str | None = None
    desired: DesiredState | None = None
    workloads: dict[str, Workload] = field(default_factory=dict)
    observed: list[Observed] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    fetch_error: ReconcilerError | None = None
    blocked: ReconcilerError | None = None  # the new commit could not be applied (invalid, rewind)
    error: ReconcilerError | None = None  # what stopped the pass
    failing: dict[str, str] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)  # models whose switch waits for a maintenance window
    drift: list[str] = field(default_factory=list)
    did_work: bool = False
    pulled_bytes: int = 0  # bytes downloaded from registries in this pass
    push_refused: bool = False  # the server refused the status push: reporting failed, so not Ready
    verdict: Verdict | None = None  # the signature check of the range applied (trust configured)

    @property
    def ready(self) -> bool:
        return self.error is None and self.blocked is None and not self.failing and not self.push_refused
