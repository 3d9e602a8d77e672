"""Staged rollouts as the fleet repository states them: ``rollouts/<name>.yaml`` (kind Rollout).

A device is in the cohort of step k when a stable hash of (rollout name, device) falls under the largest
percent of steps 0..k, or a canary step 0..k names it (devices) or matches it (selector).  Cohorts therefore
nest, and no device file changes when a rollout advances.  While a rollout is active (Progressing or Paused)
a device whose pin of the model comes from the rollout's group at ``from`` runs ``to`` when it is in the
current step's cohort; Aborted and Complete rollouts change nothing (the revert and the completion are
commits: the phase, and for completion the group's pin).

Pure: documents in, decisions out.  The device (resolve), ``validate``, ``plan`` and the controller all use
these same rules.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.errors import Problem
from reconciler.fleet.document import Document
from reconciler.quantities import parse_duration

ACTIVE = ("Progressing", "Paused")
PHASES = ("Progressing", "Paused", "Aborted", "Complete")


def bucket(rollout: str, device: str) -> float:
    """Where ``device`` falls in [0, 100) for ``rollout``: the same on every machine, for ever."""
    digest = hashlib.sha256(f"{rollout}\0{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / 2**64


@dataclass(frozen=True)
class Step:
    percent: float | None = None
    devices: tuple[str, ...] = ()
    match: tuple[tuple[str, str], ...] = ()  # selector.matchLabels
    bake: float = 0.0

    def describe(self) -> str:
        if self.percent is not None:
            return f"{self.percent:g}%"
        if self.devices:
            return "devices " + ", ".join(self.devices)
        return "selector " + ",".join(f"{k}={v}" for k, v in self.match)

    def matches(self, device: str, labels: Mapping[str, str]) -> bool:
        """A canary step names or selects ``device`` (percent steps never do: see ``Rollout.in_cohort``)."""
        if device in self.devices:
            return True
        return bool(self.match) and all(labels.get(k) == v for k, v in self.match)


@dataclass(frozen=True)
class Rollout:
    name: str
    group: str
    model: str
    from_version: str
    to_version: str
    steps: tuple[Step, ...]
    max_failed: str | int = 0  # a count, or "10%"
    min_reporting: float = 100.0
    on_failure: str = "revert"
    max_pulls_per_minute: int | None = None
    step: int = 0
    phase: str = "Progressing"
    since: str | None = None
    path: str = ""

    @classmethod
    def from_document(cls, doc: Document) -> Rollout:
        spec, status = doc.spec, doc.data.get("status") or {}
        gates = spec.get("gates") or {}
        steps = tuple(
            Step(percent=float(s["percent"]) if "percent" in s else None, devices=tuple(s.get("devices") or ()),
                 match=tuple(sorted(((s.get("selector") or {}).get("matchLabels") or {}).items())),
                 bake=parse_duration(s.get("bake", 0)) or 0.0)
            for s in spec["steps"])
        return cls(name=doc.name or doc.path.rsplit("/", 1)[-1].rsplit(".", 1)[0], group=spec["group"],
                   model=spec["model"], from_version=str(spec["from"]), to_version=str(spec["to"]), steps=steps,
                   max_failed=gates.get("maxFailed", 0), min_reporting=float(gates.get("minReporting", 100)),
                   on_failure=spec.get("onFailure", "revert"), max_pulls_per_minute=spec.get("maxPullsPerMinute"),
                   step=min(int(status.get("step", 0)), len(steps) - 1), phase=status.get("phase", "Progressing"),
                   since=status.get("since"), path=doc.path)

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE

    def in_cohort(self, device: str, labels: Mapping[str, str], step: int | None = None) -> bool:
        """In the cohort of ``step`` (default the current one): the union of steps 0..step."""
        upto = self.steps[: (self.step if step is None else step) + 1]
        percent = max((s.percent for s in upto if s.percent is not None), default=0.0)
        if percent and bucket(self.name, device) < percent:
            return True
        return any(s.matches(device, labels) for s in upto)

    def joined_at(self, device: str, labels: Mapping[str, str]) -> int | None:
        """The first step whose cohort holds ``device`` (None: not up to the current step)."""
        return next((k for k in range(self.step + 1) if self.in_cohort(device, labels, k)), None)

    def allowed_failures(self, cohort: int) -> int:
        if isinstance(self.max_failed, str) and self.max_failed.endswith("%"):
            return int(cohort * float(self.max_failed[:-1]) / 100.0)
        return int(self.max_failed)

    def pull_delay(self, device: str, labels: Mapping[str, str], group_size: int, rate: int | None) -> float:
        """Seconds after the current step began at which ``device`` pulls ``to``: the devices the step adds are
        spread by their hash over the minutes ``rate`` pulls a minute need (0 without a rate, or for a device
        that joined at an earlier step and has the artifact already).  The step's size is estimated from the
        group's size (exact for ``all`` and member lists, an upper bound for selectors)."""
        k = self.step
        if not rate or self.joined_at(device, labels) != k:
            return 0.0
        step, b = self.steps[k], bucket(self.name, device)
        before = max((s.percent for s in self.steps[:k] if s.percent is not None), default=0.0)
        if step.percent is not None and before <= b < step.percent:
            share, position = (step.percent - before) / 100.0, (b - before) / (step.percent - before)
        elif step.devices:
            share, position = len(step.devices) / max(group_size, 1), step.devices.index(device) / len(step.devices) \
                if device in step.devices else b / 100.0
        else:
            share, position = 1.0, b / 100.0
        minutes = math.ceil(max(1, round(group_size * share)) / rate)
        return math.floor(position * minutes) * 60.0

    def where(self) -> str:
        return f"step {self.step + 1}/{len(self.steps)} ({self.steps[self.step].describe()})"


class RolloutBook:
    """The active rollouts of one revision, by (group, model)."""

    def __init__(self, docs: Iterable[Document]) -> None:
        self.all = sorted((Rollout.from_document(d) for d in docs), key=lambda r: r.name)
        self.active: dict[tuple[str, str], list[Rollout]] = defaultdict(list)
        for r in self.all:
            if r.active:
                self.active[(r.group, r.model)].append(r)

    def concerning(self, group: str, model: str, pinned: str) -> Rollout | None:
        """The one active rollout of ``group``'s pin of ``model`` at ``pinned``, if there is exactly one."""
        found = self.active.get((group, model)) or []
        return found[0] if len(found) == 1 and found[0].from_version == pinned else None

    def version_for(self, device: str, labels: Mapping[str, str], group: str, model: str,
                    pinned: str) -> tuple[str, str | None]:
        """The version ``device`` runs of ``model`` pinned at ``pinned`` by ``group``, and why (None: no
        rollout concerns it).  Two active rollouts on one pin are a validation error: neither applies."""
        r = self.concerning(group, model, pinned)
        if r is None:
            return pinned, None
        if r.in_cohort(device, labels):
            return r.to_version, f"rollout {r.name} {r.where()}: in the cohort, runs {r.to_version}"
        return pinned, f"rollout {r.name} {r.where()}: not in the cohort, runs {r.from_version}"


def problems(book: RolloutBook, docs: Mapping[str, Document], groups: Mapping[str, Document],
             models: Mapping[str, Document | None], devices: set[str]) -> list[Problem]:
    """What ``validate`` refuses: unknown group, model or versions, ``from`` not the group's pin, two active
    rollouts on one group and model, percents not increasing, canary devices without a file."""
    out: list[Problem] = []
    for r in book.all:
        doc = docs[r.name]
        gdoc, mdoc = groups.get(r.group), models.get(r.model)
        if gdoc is None:
            out.append(doc.problem(("spec", "group"), f"rollout {r.name!r}: unknown group {r.group!r} "
                                                      f"(there is no groups/{r.group}.yaml)"))
        if mdoc is None:
            out.append(doc.problem(("spec", "model"), f"rollout {r.name!r}: unknown model {r.model!r} "
                                                      f"(there is no models/{r.model}.yaml)"))
        else:
            versions = mdoc.spec.get("versions") or {}
            for f, v in (("from", r.from_version), ("to", r.to_version)):
                if v not in versions:
                    out.append(doc.problem(("spec", f), f"model {r.model!r} has no version {v!r} "
                                                        f"(known: {', '.join(sorted(versions))})"))
        if r.from_version == r.to_version:
            out.append(doc.problem(("spec", "to"), f"rollout {r.name!r}: from and to are both {r.to_version!r}"))
        if gdoc is not None and r.active:
            pin = next((p["version"] for p in gdoc.spec.get("models") or [] if p["name"] == r.model), None)
            if pin != r.from_version:
                now = f"pins {pin!r}" if pin is not None else "does not pin it"
                out.append(doc.problem(("spec", "from"), f"rollout {r.name!r} starts from {r.model} "
                                                         f"{r.from_version!r} but group {r.group!r} {now}"))
        last = 0.0
        for i, s in enumerate(r.steps):
            if s.percent is not None:
                if s.percent <= last:
                    out.append(doc.problem(("spec", "steps", i, "percent"),
                                           f"step {i + 1} is {s.percent:g}%, not more than an earlier step's "
                                           f"{last:g}%: percents must increase"))
                last = max(last, s.percent)
            for j, d in enumerate(s.devices):
                if d not in devices:
                    out.append(doc.problem(("spec", "steps", i, "devices", j),
                                           f"canary device {d!r} has no file devices/{d}.yaml"))
        mf = r.max_failed
        if isinstance(mf, str) and float(mf[:-1]) > 100:
            out.append(doc.problem(("spec", "gates", "maxFailed"), f"maxFailed {mf!r} is more than 100%"))
    for (group, model), rs in book.active.items():
        if len(rs) > 1:
            names = ", ".join(r.name for r in rs)
            for r in rs:
                out.append(docs[r.name].problem(("spec", "model"),
                                                f"two active rollouts of model {model!r} in group {group!r} "
                                                f"({names}): finish or abort one first"))
    return out

