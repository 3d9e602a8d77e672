"""One reconcile pass of the device agent.

    fetch -> verify (no rewind) -> signatures (trust) -> load desired state -> pull artifacts -> observe + plan
    -> execute
    and, whatever happened, report (status.yaml on status/<device>) and save local state.

Each step takes the pass's ``Cycle`` and either fills it in or raises a ReconcilerError that stops the pass.
A fetch that fails (offline) or a new commit that is invalid or rewinds history does not stop it: the pass
goes on with the last applied commit, so what runs keeps running and drift is still repaired.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

import pygit2

from reconciler.agent import detectors as detectors_file
from reconciler.agent import pullspread, workloads
from reconciler.agent.config import AgentConfig
from reconciler.agent.cycle import Cycle
from reconciler.agent.executor import Executor, now_iso
from reconciler.agent.medium import Medium
from reconciler.agent.modelgate import ModelGate
from reconciler.agent.plan import plan
from reconciler.agent.poll import Poller
from reconciler.agent.state import AgentState
from reconciler.credentials import CredentialStore, mask
from reconciler.errors import (
    DiskFull,
    InvalidConfig,
    NonFastForward,
    NotFound,
    ReconcilerError,
    Stalled,
    Unexpected,
    Untrusted,
    Waiting,
)
from reconciler.fleet.resolve import render_device
from reconciler.fleet.source import GitSource
from reconciler.fleet.view import FleetView, ParseCache
from reconciler.git.mirror import FleetMirror, GitAuth
from reconciler.model import DesiredState
from reconciler.rollout import windows
from reconciler.runtimes import get_runtime
from reconciler.runtimes.base import Runtime
from reconciler.status import conditions as summarizer
from reconciler.status import document as status_doc
from reconciler.status import message as status_message
from reconciler.status.writer import StatusWriter

__all__ = ["Cycle", "Reconciler", "now_iso"]  # Cycle and now_iso live in cycle.py and executor.py

if TYPE_CHECKING:  # loaded on first pull: the CLI and a no-op pass never import oras or requests
    from reconciler.agent.trustgate import TrustGate
    from reconciler.artifacts.registry import RegistryClient
    from reconciler.artifacts.store import ArtifactStore

log = logging.getLogger("reconciler.agent")


class Reconciler:
    """Holds what outlives a pass: the mirror, the store, the runtimes, the parse cache and the state."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        auth = GitAuth(ssh_key=config.ssh_key, known_hosts=config.known_hosts, token_file=config.token_file,
                       username=config.username)
        self.mirror = FleetMirror(self.data_dir / "fleet.git", config.repo_url, config.branch, auth,
                                  timeout=config.git_timeout)
        self.poller = Poller(self.mirror, config.mirrors, config.beacon)
        self.writer = StatusWriter(self._status_mirror(auth), config.device)
        self.credentials = CredentialStore(config.credentials)
        self.state = AgentState.load(self.data_dir)
        self.cache = ParseCache(limit=20_000)
        self._desired_cache: tuple[str, DesiredState] | None = None
        self._key_cache: tuple[pygit2.Oid, str] | None = None
        self._runtimes: dict[str, Runtime] = {}
        self._store: ArtifactStore | None = None
        self.last_cycle: Cycle | None = None
        self.current: Cycle | None = None  # the pass under way (log lines name its commit)
        self.last_status: dict[str, object] | None = None  # the last status document built (the local API)
        self._secrets: tuple[str, ...] | None = None
        self._last_commit_monotonic: float | None = None  # heartbeats count on the monotonic clock
        self.trust: TrustGate | None = None
        if config.allowed_signers is not None:
            from reconciler.agent.trustgate import TrustGate

            self.trust = TrustGate(config)
        self.model_gate = ModelGate(config.model_keys, config.repo_path)
        # set for one pass by `bundle apply`: the bundle stands in for the server and the registry
        self.medium: Medium | None = None
        self.executor = Executor(self.state, config.device, self.data_dir, runtime=self._runtime,
                                 store=self._store_for, mask=self._mask)

    # -- the pass ------------------------------------------------------------------------------------------
    def run_once(self) -> Cycle:
        cycle = self.current = Cycle()
        self._secrets = None
        try:
            for step in (self.fetch, self.verify, self.verify_signatures, self.load, self.pull, self.observe_and_plan,
                         self.execute):
                step(cycle)
        except ReconcilerError as exc:
            cycle.error = exc
            log.warning("cycle stopped: %s", self._mask(str(exc)).splitlines()[0])
        except Exception as exc:  # a bug or MemoryError: logged with its traceback, reported, retried
            cycle.error = Unexpected(self._mask(f"internal error: {type(exc).__name__}: {exc}"))
            log.exception("cycle stopped by an unexpected error")
        finally:
            self.report(cycle)
        self.last_cycle = cycle
        return cycle

    # -- steps ---------------------------------------------------------------------------------------------
    def fetch(self, cycle: Cycle) -> None:
        try:
            if self.medium is not None:  # an air-gap bundle: no poll, no network
                cycle.tip = self.medium.fetch(self.mirror)
            else:
                cycle.polled = self.poller.poll()
                cycle.tip = cycle.polled.tip
            self.state.observed_commit = str(cycle.tip)
        except ReconcilerError as exc:
            cycle.fetch_error = exc
            if isinstance(exc, Stalled):
                cycle.blocked = exc  # refused credentials or host key: an operator must act
            log.warning("fetch failed, working with what was applied: %s", exc)
        cycle.target = cycle.tip
        if cycle.target is None:
            cycle.target = self._applied_oid()
            if cycle.target is None:
                raise cycle.fetch_error or NotFound("nothing fetched and nothing applied yet")

    def verify(self, cycle: Cycle) -> None:
        applied = self._applied_oid()
        if applied is None and self.state.applied_commit and cycle.tip is not None:
            # The fetch brought the tip's whole history, so an applied commit the mirror does not hold is not
            # in it (the mirror was deleted or re-cloned, and main was force-pushed): refuse, whatever the
            # mirror remembers.  What runs keeps running; nothing here can be applied.
            if cycle.polled is not None:
                self.poller.refuse(cycle.polled)
            raise NonFastForward(
                f"fetched {self.config.branch} at {str(cycle.tip)[:12]} does not contain the applied commit "
                f"{self.state.applied_commit[:12]}: refusing to rewind; what runs keeps running")
        if applied is None or cycle.target is None or cycle.target == applied:
            return
        if not self.mirror.is_descendant(cycle.target, applied):
            if cycle.polled is not None:
                self.poller.refuse(cycle.polled)
            cycle.blocked = NonFastForward(
                f"fetched {self.config.branch} at {str(cycle.target)[:12]} is not a descendant of the applied "
                f"commit {str(applied)[:12]}: refusing to rewind; keeps running {str(applied)[:12]}")
            cycle.target = applied

    def verify_signatures(self, cycle: Cycle) -> None:
        """With ``trust``, every commit from the applied one to the target is signed by an allowed signer."""
        applied = self._applied_oid()
        if self.trust is None or cycle.target is None or cycle.target == applied:
            return
        cycle.verdict = self.trust.check(self.mirror.repo, applied, cycle.target)
        if not cycle.verdict.ok:
            if cycle.polled is not None:
                self.poller.refuse(cycle.polled)  # a mirror that served it is not asked for it again
            refused = Untrusted(cycle.verdict.message())
            if applied is None:
                raise refused
            cycle.blocked, cycle.target = refused, applied

    def load(self, cycle: Cycle) -> None:
        assert cycle.target is not None
        cycle.key = self._relevant_key(cycle.target)
        try:
            cycle.desired = self._resolve(cycle.target, cycle.key)
        except (InvalidConfig, NotFound) as exc:
            applied = self._applied_oid()
            if applied is None or applied == cycle.target:
                raise
            cycle.blocked = exc
            cycle.target = applied
            cycle.key = self._relevant_key(applied)
            cycle.desired = self._resolve(applied, cycle.key)
        workloads.check_credentials(cycle.desired, self.credentials)
        cycle.workloads = workloads.build(cycle.desired, self.config.device, self.data_dir,
                                          str(self.data_dir / detectors_file.FILE))

    def pull(self, cycle: Cycle) -> None:
        """Every artifact of the desired state is in the store before anything running is touched."""
        assert cycle.desired is not None
        (self.data_dir / "empty").mkdir(exist_ok=True)
        workloads.prepare(cycle.workloads)
        for m in cycle.desired.models:
            if not m.artifact or pullspread.later(m, self.state.models.setdefault(m.name, {}), cycle, time.time()):
                continue
            info = self.state.models.setdefault(m.name, {})
            source = self.medium.blobs() if self.medium else self._client(m.registry, cycle.desired)
            try:
                result = self._store_for().pull(m.artifact, source, model=m.name, version=m.version)
            except ReconcilerError as exc:
                self.executor.pull_failed(m, exc, cycle)
                raise
            cycle.pulled_bytes += result.bytes_downloaded
            if not result.cached:
                cycle.did_work = True
                info.setdefault("pulls", {})[m.version] = round(result.seconds, 3)
            info.setdefault("digests", {})[m.version] = result.manifest_digest
            assert cycle.target is not None
            signer = self.model_gate.check(self.mirror.repo, cycle.target, m.name, m.version, result.path,
                                           result.manifest_digest)  # before anything runs it
            if signer is not None:
                info.setdefault("signatures", {})[m.version] = signer

    def observe_and_plan(self, cycle: Cycle) -> None:
        assert cycle.desired is not None
        runtime = self._runtime(str(cycle.desired.config.get("runtime", "process")))
        cycle.observed = runtime.observe(self.config.device, with_stats=False)  # planning needs no stats
        self.executor.adopt(runtime, cycle)
        # workloads left in a runtime the device no longer uses are stopped too
        for name in [r for r in self.state.runtimes if r != runtime.name]:
            with contextlib.suppress(ReconcilerError):
                for o in self._runtime(name).observe(self.config.device):
                    self._runtime(name).stop(o)
                    cycle.did_work = True
        self.state.runtimes = [runtime.name]
        new_hashes = detectors_file.per_model_hash(cycle.desired.detectors)
        changed = {m for m in set(new_hashes) | set(self.state.detectors)
                   if new_hashes.get(m) != self.state.detectors.get(m)}
        if cycle.key != self.state.applied_key:
            # a new desired state gets a new chance: forget health failures of the previous one
            self.state.failed = {h: f for h, f in self.state.failed.items() if f.get("key") == cycle.key}
        cycle.actions = plan(cycle.workloads, cycle.observed, detectors_changed=changed,
                             failed=set(self.state.failed))
        cycle.actions, held, why = windows.gate(cycle.actions, cycle.desired.config, dt.datetime.now(dt.UTC))
        if held:
            cycle.held = {a.model for a in held}
            cycle.blocked = cycle.blocked or Waiting(why)

    def execute(self, cycle: Cycle) -> None:
        """Start, check, roll back and stop as planned (executor.py), then record what runs."""
        self.executor.execute(cycle)

    # -- report --------------------------------------------------------------------------------------------
    def report(self, cycle: Cycle) -> None:
        now = now_iso()
        verified, signed_by = self._verified(cycle)
        if cycle.desired is not None:  # a desired model that does not run is never "AllHealthy"
            for m in cycle.desired.models:  # (one held on purpose, by a pull slot or a window, is Waiting)
                info = self.state.models.get(m.name) or {}
                if m.name not in cycle.failing and m.name not in cycle.held and (
                        info.get("state") != "running" or info.get("version") != m.version):
                    cycle.failing[m.name] = f"version {m.version} is not running ({info.get('state') or 'pending'})"
        facts = summarizer.Facts(error=cycle.error or cycle.blocked, fetch_error=cycle.fetch_error,
                                 failing=cycle.failing,
                                 target=str(cycle.target) if cycle.target else None,
                                 applied=self.state.applied_commit,
                                 push_error=self.state.push_error, push_refused=self.state.push_refused,
                                 verified=verified)
        phase, conditions = summarizer.summarize(facts, self.state.conditions, now)
        self.state.conditions = summarizer.as_mapping(conditions)
        for c in conditions:
            c["message"] = self._mask(c["message"])
        models = {name: info for name, info in self.state.models.items() if "version" in info}
        doc = status_doc.build(
            device=self.config.device, runtime=str(cycle.desired.config.get("runtime")) if cycle.desired else None,
            observed=self.state.observed_commit, applied=self.state.applied_commit, phase=phase,
            conditions=conditions, models=models, desired=cycle.desired, drift=cycle.drift, now=now,
            pending=self.writer.pending(), push_error=self.state.push_error,
            fetch=cycle.polled.to_status() if cycle.polled else None)
        if signed_by:
            doc["signedBy"] = signed_by  # who signed the applied commit, as this device verified it
        self.last_status = doc
        heartbeat = (cycle.desired.settings.get("heartbeatInterval", 3600.0) if cycle.desired else 3600.0)
        previous = self.writer.previous_text()
        due = self._heartbeat_due(heartbeat)
        try:
            changed = status_doc.significant(previous) != status_doc.significant(status_doc.render(doc))
            if due or changed:
                # what will wait on the device after this cycle's push, as state.json counts it: offline (the
                # fetch failed) or refused last time, this commit queues behind the others; else the push below
                # takes them all
                stuck = cycle.fetch_error is not None or self.state.push_refused
                doc["push"]["pending"] = doc["push"]["pending"] + 1 if stuck else 0
                message = status_message.commit_message(status_doc.parse(previous), doc, heartbeat=not changed)
                if self.writer.commit(status_doc.render(doc), message) is not None:
                    self.state.last_status_commit = time.time()
                    self._last_commit_monotonic = time.monotonic()
            if self.medium is None:  # with a bundle, status goes back on the medium (bundle/statusfile.py)
                outcome = self.writer.push()
                self.state.push_error = None if outcome.pushed else outcome.message
                self.state.push_refused = False
                if not outcome.pushed:
                    log.warning("status not pushed: %s", outcome.message)
        except DiskFull as exc:  # not a refusal: the commit is made again when there is room
            log.error("status not committed: %s", exc)
        except ReconcilerError as exc:
            # refused by the server: never mistaken for success; kept for the next status and the log
            self.state.push_error = self._mask(str(exc))
            self.state.push_refused = cycle.push_refused = True
            log.error("status push refused: %s", self.state.push_error)
        finally:
            self.state.save(self.data_dir)

    # -- helpers -------------------------------------------------------------------------------------------
    def _heartbeat_due(self, heartbeat: float) -> bool:
        """Intervals on the monotonic clock while the agent runs; across a restart, the wall clock of the last
        status commit, where a clock set back (elapsed < 0) counts as due rather than stopping heartbeats."""
        if self._last_commit_monotonic is not None:
            return time.monotonic() - self._last_commit_monotonic >= heartbeat
        elapsed = time.time() - self.state.last_status_commit
        return elapsed < 0 or elapsed >= heartbeat

    def _verified(self, cycle: Cycle) -> tuple[tuple[str, str, str] | None, str | None]:
        """The Verified condition and the applied commit's signer (``principal (key)``), with trust."""
        if self.trust is None:
            return None, None
        try:
            applied = self.trust.applied_check(self.mirror.repo, self.state.applied_commit)
        except ReconcilerError as exc:  # the anchor itself is unreadable: said in Ready too
            return ("False", exc.reason, str(exc).splitlines()[0]), None
        signed_by = f"{applied.signer} ({applied.key})" if applied is not None and applied.ok else None
        return self.trust.condition(cycle.verdict, self.state.conditions, applied), signed_by

    def _status_mirror(self, fleet_auth: GitAuth) -> FleetMirror:
        """The repository status goes to: the fleet repo's mirror, or a bare clone of ``statusRepo``."""
        access = self.config.status_repo
        if access is None:
            return self.mirror
        auth = GitAuth(ssh_key=access.ssh_key, known_hosts=access.known_hosts, token_file=access.token_file,
                       username=access.username)
        return FleetMirror(self.data_dir / "status.git", access.url, self.config.branch, auth,
                           timeout=self.config.git_timeout)

    def _applied_oid(self) -> pygit2.Oid | None:
        if not self.state.applied_commit:
            return None
        oid = pygit2.Oid(hex=self.state.applied_commit)
        return oid if oid in self.mirror.repo else None

    def _relevant_key(self, commit: pygit2.Oid) -> str:
        """Ids of everything that can change this device's desired state; equal ids, equal state."""
        # most cycles see the same commit again; reading the 10,000-entry devices/ tree was a third of them
        if self._key_cache is not None and self._key_cache[0] == commit:
            return self._key_cache[1]
        key = GitSource(self.mirror.repo, commit, self.config.repo_path).relevant_key(self.config.device)
        self._key_cache = (commit, key)
        return key

    def _resolve(self, commit: pygit2.Oid, key: str) -> DesiredState:
        if self._desired_cache is not None and self._desired_cache[0] == key:
            return self._desired_cache[1]
        view = FleetView(GitSource(self.mirror.repo, commit, self.config.repo_path), self.cache)
        desired = render_device(view, self.config.device)
        self._desired_cache = (key, desired)
        return desired

    def _runtime(self, name: str) -> Runtime:
        if name not in self._runtimes:
            options = dict(self.config.runtime_options)
            options["credentials"] = self.credentials
            if self.config.docker_host:
                options["dockerHost"] = self.config.docker_host
            self._runtimes[name] = get_runtime(name, self.data_dir, options)
        return self._runtimes[name]

    def _store_for(self) -> ArtifactStore:
        if self._store is None:
            from reconciler.artifacts.store import ArtifactStore

            self._store = ArtifactStore(self.data_dir)
        return self._store

    def _client(self, alias: str | None, desired: DesiredState) -> RegistryClient:
        from reconciler.artifacts.registry import RegistryClient

        registry = desired.registries.get(alias) if alias else None
        credential = self.credentials.resolve(registry.credentials_ref) if registry else None
        return RegistryClient(registry, credential, deadline_seconds=self.config.pull_timeout,
                              min_bytes_per_second=self.config.pull_min_rate, slow_grace_seconds=self.config.pull_grace)

    def mask(self, text: str) -> str:
        """``text`` with the device's secrets replaced by ``***`` (log lines, API answers)."""
        return self._mask(text)

    def _mask(self, text: str) -> str:
        # the secret files are read once per cycle (they may rotate), not once per message
        if self._secrets is None:
            found: list[str] = []
            for name in self.config.credentials:
                with contextlib.suppress(ReconcilerError):
                    cred = self.credentials.resolve(name)
                    if cred is not None:
                        found.extend(cred.secrets())
            self._secrets = tuple(found)
        return mask(text, self._secrets)

