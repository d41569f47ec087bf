"""One bcd among several (one per data centre, plus a witness), coordinated through a `Coordinator` (etcd).

The link between the engine and the coordinator, built by the composition root when the config has a
`cluster:` section (a lone instance has none: the engine then decides and runs exactly as before):

- **Views.** Our view (per service and site: state, since, reason) is published as JSON on change (at most
  4 times a second) and every `republish` seconds; the others' views come from the coordinator. A vantage that
  sees every site of every service down suspects its own network: it withdraws its view and does not vote.
- **Quorum.** `quorum()` gives the pure policy the live vantages' votes on every site of a service: the active
  site (down for a quorum?) and the others (up for a quorum?).
- **Exactly one executor.** A run starts only once this instance holds the service's lock: automatic runs
  from a task (one acquisition per service at a time), operators' runs from `start_requested()`. An automatic
  run's lock is taken only if every other vantage's view the decision counted is still at the revision it was
  read at (in the same etcd transaction); if one changed, nothing runs (event `views_changed`) and the service
  is decided again once the changed view has arrived here. The run carries a `Fence`: `{fence_token}` is the
  lock's token, every step is recorded in the store (fenced) before it runs and runs only while the lock is
  valid less a safety margin. At the end the holder writes the final record and, after a successful run, the
  active site (fenced), deletes the service's run records beyond the newest `keep_runs` (fenced; a record
  that is unfinished or waits for an acknowledgement stays), then releases the lock.
- **Runs outlive their executor only as records.** Every `SYNC_EVERY` seconds the run records, locks and
  active sites are read: the active site is adopted; a run elsewhere shows as in progress here; a finished
  run elsewhere is mirrored into the local journal (so cooldowns and blocks agree); a run whose holder lost
  its lock before it finished is journaled `interrupted` here and blocks the service, and whoever next holds the
  lock marks its record interrupted. Nobody re-runs a step. Acknowledgements travel the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bcd import policy
from bcd.coordination import CoordinationUnavailable, Coordinator, Lock, ViewsChanged, active_key, run_key
from bcd.engine import QUIET_STATUSES, Engine, RequestRefused
from bcd.journal import JournalWriteError, RunRecord
from bcd.model import Event, Guard, RunKind, RunResult, SiteState
from bcd.policy import Quorum, Request, RunInfo, Verdict, Vote
from bcd.runbooks.runner import ActiveRun, LostLock

log = structlog.get_logger("bcd.cluster")

VIEW_MIN_GAP = 0.25  # our view is published at most 4 times a second
SYNC_EVERY = 0.5  # run records, locks and active sites are read this often
UNFINISHED = frozenset({str(RunResult.RUNNING), str(RunResult.WAITING_APPROVAL)})
NEEDS_ACK = frozenset({"failed", "aborted", "rolled_back", "interrupted"})
KEEP_RUNS = 20  # run records of a service kept in etcd (the newest); older ones are deleted at the end of a run


@dataclass(frozen=True, slots=True)
class SiteView:
    state: SiteState
    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class PeerView:
    """Another vantage's published view, as read."""

    vantage: str
    at: float  # when it was made (its wall clock)
    age: float  # seconds since it was written, on our clock
    services: dict[str, dict[str, SiteView]]

    @classmethod
    def parse(cls, vantage: str, raw: bytes, age: float) -> PeerView | None:
        try:
            data = json.loads(raw)
            services = {
                service: {site: SiteView(SiteState(item["state"]), float(item["since"]), str(item["reason"]))
                          for site, item in sites.items()}
                for service, sites in data["services"].items()
            }
            return cls(vantage, float(data.get("at", 0.0)), age, services)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("view_unreadable", vantage=vantage)
            return None


class Fence:
    """A run's hold on its lock: the runner's `RunFence`. Keeps the run's record and writes it, fenced."""

    def __init__(self, link: ClusterLink, lock: Lock, record: dict[str, Any]) -> None:
        self._link = link
        self.lock = lock
        self.record = record
        self._lost = asyncio.Event()
        self._why = ""
        self._writes = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def token(self) -> int:
        return self.lock.token

    @property
    def key(self) -> str:
        return run_key(self.lock.service, str(self.lock.token))

    def lose(self, why: str) -> None:
        if not self._lost.is_set():
            self._why = why
            self._lost.set()

    def problem(self) -> str | None:
        """Why the run may not go on (None while the lock is valid beyond the safety margin)."""
        if self._lost.is_set():
            return self._why
        now = self._link.clock()
        if not self.lock.valid(now) or now >= self.lock.valid_until - self._link.margin:
            return f"the lock of {self.lock.service} (token {self.token}) ran out"
        return None

    async def write(self) -> None:
        """Write the record as it is now; LostLock when the fence refuses it, CoordinationUnavailable when
        the store could not be asked."""
        async with self._writes:
            value = json.dumps(self.record, default=str).encode()
            written = await self._link.coordinator.fenced_put(self.lock, self.key, value)
        if not written:
            self.lose(f"the fence refused the record of {self.lock.service} (token {self.token}): "
                      "another instance holds the lock")
            raise LostLock(self._why)

    async def write_while_valid(self) -> None:
        """Write the record, retrying while the store does not answer and the lock is still valid."""
        while True:
            problem = self.problem()
            if problem is not None:
                raise LostLock(problem)
            try:
                await self.write()
                return
            except CoordinationUnavailable:
                await asyncio.sleep(0.1)

    async def before_step(self, run_id: int, seq: int, phase: str, step: str) -> None:
        problem = self.problem()
        if problem is not None:
            raise LostLock(f"{problem} before step {seq} {step!r}")
        self.record["steps"].append({"seq": seq, "phase": phase, "name": step, "outcome": "running"})
        self.record["step"] = {"seq": seq, "phase": phase, "name": step}
        await self.write_while_valid()

    def after_step(self, run_id: int, seq: int, phase: str, step: str, outcome: str) -> None:
        for item in self.record["steps"]:
            if item["seq"] == seq:
                item["outcome"] = outcome
        if self.problem() is None:
            task = asyncio.get_running_loop().create_task(self._write_quietly())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write_quietly(self) -> None:
        with contextlib.suppress(LostLock, CoordinationUnavailable):
            await self.write()

    async def expired(self) -> str:
        while True:
            problem = self.problem()
            if problem is not None:
                return problem
            left = self.lock.valid_until - self._link.margin - self._link.clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(left, 0.5))):  # validity moves on with each keepalive
                    await self._lost.wait()


class ClusterLink:
    """Views, votes and the lock bridge of one instance (`vantage`). See the module docstring."""

    def __init__(
        self,
        coordinator: Coordinator,
        engine: Engine,
        *,
        vantage: str,
        quorum: str | int = "majority",
        lease_ttl: float = 10.0,
        call_timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        keep_runs: int = KEEP_RUNS,
    ) -> None:
        self.coordinator = coordinator
        self.engine = engine
        self.vantage = vantage
        self.quorum_setting = quorum
        self.lease_ttl = lease_ttl
        self.margin = call_timeout  # steps stop this long before the lock's validity ends
        self.republish = max(1.0, lease_ttl / 3)
        self.clock = clock
        self.wall_clock = wall_clock
        self.keep_runs = keep_runs
        self.suspect = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._owners: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # services with a lock acquisition (or a held lock) of ours in flight
        self._not_before: dict[str, float] = {}  # service -> no automatic acquisition before (the lock was taken)
        self._refused_views: dict[str, dict[str, int]] = {}  # service -> counted views found changed in the store
        self._pending_acks: dict[str, str] = {}  # service -> who acknowledged, until written to the store
        self._fences: dict[str, Fence] = {}
        self._parsed: dict[str, tuple[bytes, PeerView | None]] = {}
        self._seen_views: dict[str, bytes] = {}
        self._published: tuple[str, float] | None = None  # (content, when) of our last publication
        self._locks: dict[str, dict[str, Any]] = {}  # service -> holder {"vantage", "lease"}
        self._records: dict[str, list[dict[str, Any]]] = {}  # service -> run records
        self._mirrored: dict[int, int] = {}  # token -> local run id of records mirrored here
        self._was_available = False

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._load_mirrored()
        await self.coordinator.start()
        self._spawn(self._loop("cluster-views", VIEW_MIN_GAP, self._views_once))
        self._spawn(self._loop("cluster-sync", SYNC_EVERY, self._sync_once))

    async def stop(self) -> None:
        """After the runner stopped: let the run owners write their final records and release, then stop."""
        if self._owners:
            await asyncio.wait(self._owners, timeout=2 * self.margin + 0.5)
        for task in [*self._tasks, *self._owners]:
            task.cancel()
        for task in [*self._tasks, *self._owners]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.coordinator.stop()

    def _spawn(self, work: Coroutine[Any, Any, None], owner: bool = False) -> None:
        task = asyncio.get_running_loop().create_task(work)
        group = self._owners if owner else self._tasks
        group.add(task)
        task.add_done_callback(group.discard)

    async def _loop(self, name: str, every: float, once: Callable[[], Coroutine[Any, Any, None]]) -> None:
        while True:
            try:
                await once()
            except CoordinationUnavailable:
                pass
            except Exception:  # the one catch-all of this task: log, keep the loop alive
                log.exception(f"{name}_failed")
            await asyncio.sleep(every)

    def lost(self, service: str) -> None:
        """The coordinator's on_lost: a lock of ours is gone (its lease lapsed or the fence refused a write)."""
        fence = self._fences.get(service)
        if fence is not None:
            fence.lose(f"the lock of {service} (token {fence.token}) was lost")

    @property
    def available(self) -> bool:
        return self.coordinator.available

    # -- views ---------------------------------------------------------------------------------------
    def _our_view(self) -> dict[str, dict[str, dict[str, Any]]]:
        services: dict[str, dict[str, dict[str, Any]]] = {}
        for (service, site), health in self.engine.sites.items():
            services.setdefault(service, {})[site] = {
                "state": str(health.effective), "since": health.since, "reason": health.reason}
        return services

    def _suspects_itself(self) -> bool:
        sites = self.engine.sites.values()
        return bool(self.engine.sites) and all(site.effective is SiteState.DOWN for site in sites)

    async def _views_once(self) -> None:
        suspect = self._suspects_itself()
        if suspect != self.suspect:
            self.suspect = suspect
            if suspect:
                log.warning("vantage_suspects_itself", vantage=self.vantage,
                            reason="every site of every service looks down from here: probably our own network; "
                                   "view withdrawn, not voting")
            else:
                log.info("vantage_trusts_itself_again", vantage=self.vantage)
            self._refresh_contested()
        if suspect:
            if self._published is not None:
                await self.coordinator.withdraw_view()
                self._published = None
        else:
            content = json.dumps(self._our_view(), sort_keys=True)
            now = self.clock()
            if (self._published is None or self._published[0] != content
                    or now - self._published[1] >= self.republish):
                view = f'{{"vantage": {json.dumps(self.vantage)}, "at": {self.wall_clock()!r}, "services": {content}}}'
                await self.coordinator.publish_view(view.encode())
                self._published = (content, now)
        seen = {vantage: raw for vantage, (raw, _) in self.coordinator.views().items()}
        available = self.available
        if seen != self._seen_views or available != self._was_available:
            if available != self._was_available:
                log.info("coordination_up" if available else "coordination_down", vantage=self.vantage)
            self._seen_views, self._was_available = seen, available
            self._refresh_contested()

    def _refresh_contested(self) -> None:
        """Decide again wherever votes matter: services whose active site is not up here, or not quiet."""
        for name, view in list(self.engine.services.items()):
            active = self.engine.sites.get((name, view.active))
            if view.status not in QUIET_STATUSES or (active is not None and active.effective is not SiteState.UP):
                self.engine.refresh(name)

    def peers(self) -> dict[str, PeerView]:
        """The other live vantages' views (a view older than twice the lease TTL does not count)."""
        result: dict[str, PeerView] = {}
        for vantage, (raw, age) in self.coordinator.views().items():
            if vantage == self.vantage or age > 2 * self.lease_ttl:
                continue
            cached = self._parsed.get(vantage)
            if cached is None or cached[0] != raw:
                cached = self._parsed[vantage] = (raw, PeerView.parse(vantage, raw, age))
            parsed = cached[1]
            if parsed is not None:
                result[vantage] = PeerView(parsed.vantage, parsed.at, age, parsed.services)
        return result

    def holds(self, service: str) -> bool:
        """Whether this instance holds the service's lock for a run of its own."""
        return service in self._fences

    def votes(self, service: str, site: str) -> list[Vote]:
        """Every live vantage's view of one site (ours first, unless we suspect ourselves)."""
        votes = []
        if not self.suspect and not self._suspects_itself():
            ours = self.engine.sites.get((service, site))
            if ours is not None:
                votes.append(Vote(self.vantage, ours.effective, ours.reason))
        for vantage, peer in sorted(self.peers().items()):
            theirs = peer.services.get(service, {}).get(site)
            votes.append(Vote(vantage, theirs.state if theirs else SiteState.UNKNOWN,
                              theirs.reason if theirs else "no view of this site"))
        return votes

    def quorum(self, service: str, active: str) -> Quorum:
        votes = tuple(self.votes(service, active))
        standbys = {site: tuple(self.votes(service, site)) for site in self.engine.config.services[service].sites
                    if site != active}
        return Quorum(self.available, votes, policy.quorum_needed(self.quorum_setting, len(votes)),
                      self.suspect or self._suspects_itself(), standbys)

    def counted_views(self) -> dict[str, int]:
        """The store revision of every other vantage's view that votes count now (see peers())."""
        revisions = self.coordinator.view_revisions()
        return {vantage: revisions[vantage] for vantage in self.peers() if vantage in revisions}

    def evidence(self, service: str, active: str) -> dict[str, Any]:
        quorum = self.quorum(service, active)
        return {
            "vantage": self.vantage, "available": quorum.available, "needed": quorum.needed,
            "suspect_self": quorum.suspect_self, "down": list(quorum.down),
            "votes": {vote.vantage: {"state": str(vote.state), "reason": vote.reason} for vote in quorum.votes},
            "dissenting": [vote.vantage for vote in quorum.dissenting],
            "standby_votes": {site: {vote.vantage: str(vote.state) for vote in votes}
                              for site, votes in (quorum.standbys or {}).items()},
            "view_revisions": self.counted_views(),
            "views": self.views_of(service),
        }

    def views_of(self, service: str) -> dict[str, Any]:
        """Every live vantage's view of `service`, side by side (ours first)."""
        result: dict[str, Any] = {}
        if not self.suspect:
            result[self.vantage] = {"age": 0.0, "sites": {
                site: {"state": str(health.effective), "since": health.since, "reason": health.reason}
                for (name, site), health in self.engine.sites.items() if name == service}}
        for vantage, peer in sorted(self.peers().items()):
            result[vantage] = {"age": round(peer.age, 3), "sites": {
                site: {"state": str(view.state), "since": view.since, "reason": view.reason}
                for site, view in peer.services.get(service, {}).items()}}
        return result

    def lock_holder(self, service: str) -> str | None:
        """Who holds the service's lock: this instance while it has the fence; otherwise the last read of
        etcd, and nobody known while etcd cannot be read (a lost lock of ours is never shown as held)."""
        if service in self._fences:
            return self.vantage
        holder = self._locks.get(service) if self.available else None
        vantage = str(holder.get("vantage")) if holder else None
        return None if vantage == self.vantage else vantage

    def service_json(self, service: str) -> dict[str, Any]:
        """What the API adds to a service in a cluster."""
        holder = self.lock_holder(service)
        return {"views": self.views_of(service),
                "lock": {"holder": holder, "held_here": service in self._fences} if holder else None,
                "coordination": "up" if self.available else "down"}

    # -- runs elsewhere ------------------------------------------------------------------------------
    def _alive(self, service: str, record: dict[str, Any]) -> bool:
        """Whether the record's holder still holds the service's lock (as of the last read)."""
        return self._locks.get(service) == record.get("holder")

    def remote_run(self, service: str) -> RunInfo | None:
        """A run of `service` by another instance, in progress as far as the store says."""
        for record in self._records.get(service, []):
            if record.get("vantage") == self.vantage or record.get("result") not in UNFINISHED:
                continue
            if self._alive(service, record):
                step = record.get("step") or {}
                return RunInfo(f"{record['vantage']}:{record['run_id']}", RunKind(record["kind"]), record["to"],
                               record["result"] == str(RunResult.WAITING_APPROVAL), str(step.get("name", "")))
        holder = self._locks.get(service)
        if holder and holder.get("vantage") != self.vantage and service not in self._fences:
            return RunInfo(f"of lock holder {holder.get('vantage')}", RunKind.FAILOVER, "?")
        return None

    async def _sync_once(self) -> None:
        if not self.available:
            return
        # one read at one revision: a run record and its lock are judged together (a holder writes its final
        # record before it releases the lock, so "unfinished, and the lock is not its holder's" means orphaned)
        everything = await self.coordinator.read("")
        locks: dict[str, dict[str, Any]] = {}
        records: dict[str, list[dict[str, Any]]] = {}
        actives: dict[str, dict[str, Any]] = {}
        for key, raw in everything.items():
            kind, _, rest = key.partition("/")
            if kind == "locks":
                locks[rest] = _json(raw)
            elif kind == "active":
                actives[rest] = _json(raw)
            elif kind == "runs" and (record := _json(raw)):
                records.setdefault(rest.split("/")[0], []).append(record)
        for items in records.values():
            items.sort(key=lambda r: int(r.get("token", 0)))
        changed = {name for name in set(records) | set(self._records) if records.get(name) != self._records.get(name)}
        changed |= {name for name in set(locks) | set(self._locks) if locks.get(name) != self._locks.get(name)}
        self._locks, self._records = locks, records
        for service, active in actives.items():
            self._adopt(service, active)
        for service in self.engine.services:
            self._reconcile(service)
        for service in list(self._pending_acks):
            if service not in self._busy:
                self._busy.add(service)
                self._spawn(self._acknowledge(service))
        for service in changed & set(self.engine.services):
            self.engine.refresh(service)

    def _adopt(self, service: str, active: dict[str, Any]) -> None:
        site = active.get("site")
        view = self.engine.services.get(service)
        if not isinstance(site, str) or view is None or view.active == site or service in self._busy:
            return
        runner = self.engine.runner
        if runner is not None and service in runner.active:
            return
        log.info("active_adopted", service=service, site=site, run=active.get("run"), token=active.get("token"))
        self.engine.adopt_active(service, site, f"the cluster says {site} is active (run {active.get('run')}, "
                                                f"token {active.get('token')})")

    def _reconcile(self, service: str) -> None:
        """Mirror finished runs of others, journal orphaned runs as interrupted, carry acknowledgements over."""
        for record in self._records.get(service, []):
            token = int(record.get("token", 0))
            result = record.get("result")
            ours = record.get("vantage") == self.vantage
            local_id = int(record["run_id"]) if ours else self._mirrored.get(token)
            if result in UNFINISHED:
                if self._alive(service, record) or (service in self._fences and self._fences[service].token == token):
                    continue
                # the holder lost its lock before the run finished: nobody re-runs its steps
                if not ours and local_id is None:
                    self._mirror(service, record, orphaned=True)
                if service not in self._busy:
                    self._busy.add(service)
                    self._spawn(self._mark_orphans(service))
                continue
            if not ours and local_id is None:
                self._mirror(service, record, orphaned=False)
                local_id = self._mirrored.get(token)
            by = record.get("acknowledged_by")
            if by and local_id is not None and self.engine.runs.acknowledge_run(local_id, str(by)):
                log.info("acknowledgement_adopted", service=service, run_id=local_id, by=by)
                self.engine.run_changed(service)

    def _mirror(self, service: str, record: dict[str, Any], *, orphaned: bool) -> None:
        now = self.wall_clock()
        name = f"{record.get('vantage')}:{record.get('run_id')}"
        result = str(RunResult.INTERRUPTED) if orphaned else str(record.get("result"))
        detail = (f"lost_lock: {record.get('vantage')} lost the lock of {service} (token {record.get('token')}) "
                  f"before run {name} finished; no step was re-run") if orphaned else str(record.get("detail", ""))
        local = RunRecord(
            0, service, str(record.get("runbook", "")), str(record.get("kind", "failover")),
            str(record.get("trigger", "auto")), f"run {name} on {record.get('vantage')}: {record.get('reason', '')}",
            str(record.get("from", "")), str(record.get("to", "")), bool(record.get("dry_run")),
            bool(record.get("forced")),
            {"remote_run": name, "vantage": record.get("vantage"), "token": record.get("token"),
             "steps": record.get("steps", []), "quorum": record.get("evidence")},
            float(record.get("started") or now), float(record.get("ended") or now) if not orphaned else now,
            result, detail, record.get("acknowledged_by"), None, None,
        )
        run_id = self.engine.runs.create(local)
        self._mirrored[int(record.get("token", 0))] = run_id
        if orphaned:
            log.warning("run_interrupted", service=service, run_id=run_id, remote_run=name, token=record.get("token"),
                        reason="lost_lock", hint="the service stays blocked until an operator acknowledges (bcd ack)")
        self.engine.emit(
            Event("run_finished", now, service, None, f"run {name} on {record.get('vantage')} {result}: {detail}",
                  {"run_id": run_id, "result": result, "kind": local.kind, "to": local.to_site, "remote_run": name}),
            run_id=run_id, result=result, remote_run=name,
        )
        self.engine.run_changed(service)

    def _load_mirrored(self) -> None:
        for record in self.engine.runs.recent(None, 1000):
            token = record.evidence.get("token") if "remote_run" in record.evidence else None
            if token is not None:
                self._mirrored[int(token)] = record.id

    async def _mark_orphans(self, service: str) -> None:
        """Take the lock and mark every unfinished record of `service` interrupted (whoever ran it)."""
        try:
            lock = await self.coordinator.acquire(service)
        except CoordinationUnavailable:
            self._busy.discard(service)
            return
        if lock is None:
            self._busy.discard(service)
            return
        try:
            await self._close_orphans(service, lock)
        except CoordinationUnavailable:
            pass
        finally:
            await self._release(lock)
            self._busy.discard(service)

    async def _close_orphans(self, service: str, lock: Lock) -> list[dict[str, Any]]:
        """Holding `lock`: every unfinished run record of the service is an orphan; mark each interrupted
        (in the store, and here if it is not journaled here yet). Returns them."""
        prefix = f"runs/{service}/"
        orphans = []
        for key, raw in (await self.coordinator.read(prefix)).items():
            record = _json(raw)
            if not record or record.get("result") not in UNFINISHED:
                continue
            orphans.append(record)
            ours = record.get("vantage") == self.vantage
            if not ours and int(record.get("token", 0)) not in self._mirrored:
                self._mirror(service, record, orphaned=True)
            record.update(result=str(RunResult.INTERRUPTED), ended=self.wall_clock(),
                          detail=f"lost_lock: the holder lost the lock before the run finished; marked by "
                                 f"{self.vantage}; no step was re-run")
            await self.coordinator.fenced_put(lock, key, json.dumps(record).encode())
            log.warning("orphaned_run_marked_interrupted", service=service, remote_run=key, token=record.get("token"))
        return orphans

    # -- starting runs under the lock ----------------------------------------------------------------
    def start_automatic(self, service: str, action: policy.Action, reason: str) -> None:
        views = self.counted_views()  # the views this decision counted, read in the same loop iteration
        if service in self._busy or self.clock() < self._not_before.get(service, 0.0):
            return  # an acquisition (or our run) is in flight, or the lock was just found taken
        if self._refused_views.get(service) == views:
            return  # a counted view changed in the store: decide again once the change has arrived here
        self._busy.add(service)
        self._spawn(self._automatic(service, action, views))

    async def _automatic(self, service: str, action: policy.Action, views: dict[str, int]) -> None:
        try:
            lock = await self._acquire(service, action, views)
            if lock is None:
                return
            if not await self._ready_to_run(service, lock):
                return
            decision = policy.decide(self.engine.snapshot(service), self.engine.clock())
            dropped = self._dropped(decision, action, views)
            if dropped is not None:  # things changed while we took the lock
                log.info("automatic_run_dropped", service=service, reason=dropped)
                await self._release(lock)
                return
            fence = self._fence(service, lock)
            try:
                run = self.engine.start_run(service, action.kind, action.to_site, "auto", decision.reason,
                                            dry_run=action.dry_run, forced=False, fence=fence)
            except Exception as exc:
                self._fences.pop(service, None)
                await self._release(lock)
                if isinstance(exc, JournalWriteError):
                    return  # nothing started: the refresh below shows the service blocked (journal_unwritable)
                raise
            self._own(service, lock, fence, run)
            return
        finally:
            if service not in self._fences:
                self._busy.discard(service)
                self.engine.refresh(service)

    async def start_requested(self, service: str, request: Request, to_site: str, by: str,
                              reason: str) -> ActiveRun:
        """An operator's run: once we hold the lock (or, forced, without coordination: the local lock only)."""
        trigger_reason = f"{by}: {reason}" + (" (forced)" if request.force else "")
        if service in self._busy:
            raise RequestRefused(Verdict(None, f"{service}: this instance is taking the lock already",
                                         Guard.RUN_IN_PROGRESS, conflict=True))
        self._busy.add(service)
        try:
            try:
                lock = await self.coordinator.acquire(service)
            except CoordinationUnavailable as exc:
                if not request.force:
                    raise RequestRefused(Verdict(None, f"coordination unavailable: {exc} (use force to act from "
                                                       "this instance alone)", Guard.COORDINATION_UNAVAILABLE),
                    ) from None
                log.warning("forced_run_without_coordination", service=service, by=by,
                            hint="this instance's local lock only: another instance may act too")
                return self.engine.start_run(
                    service, request.kind, to_site, by,
                    trigger_reason + "; coordination unavailable: this instance's local lock only",
                    dry_run=request.dry_run, forced=True)
            if lock is None:
                holder = self.lock_holder(service) or "another instance"
                raise RequestRefused(Verdict(None, f"the lock of {service} is held by {holder}",
                                             Guard.RUN_IN_PROGRESS, conflict=True))
            if not await self._ready_to_run(service, lock):
                raise RequestRefused(Verdict(None, f"a run of {service} elsewhere was interrupted: acknowledge first "
                                                   "(bcd ack)", Guard.RUN_INTERRUPTED))
            verdict = policy.check_request(self.engine.snapshot(service), request, self.engine.clock())
            if verdict.to_site is None:
                await self._release(lock)
                raise RequestRefused(verdict)
            fence = self._fence(service, lock)
            try:
                run = self.engine.start_run(service, request.kind, verdict.to_site, by, trigger_reason,
                                            dry_run=request.dry_run, forced=request.force, fence=fence)
            except Exception:
                self._fences.pop(service, None)
                await self._release(lock)
                raise
            self._own(service, lock, fence, run)
            return run
        finally:
            if service not in self._fences:
                self._busy.discard(service)

    def _dropped(self, decision: policy.Decision, action: policy.Action, views: dict[str, int]) -> str | None:
        """Why a run decided before the lock was taken must not start now that it is held (None: it may)."""
        if decision.action != action:
            return decision.reason
        if self.counted_views() != views:  # the decision now counts views the lock's transaction did not check
            return f"{decision.reason}; but the views counted changed while the lock was taken: deciding again"
        return None

    async def _acquire(self, service: str, action: policy.Action, views: dict[str, int]) -> Lock | None:
        try:
            lock = await self.coordinator.acquire(service, views)
        except ViewsChanged as exc:
            self._refused_views[service] = views
            self._views_changed(service, action, str(exc))
            return None
        except CoordinationUnavailable as exc:
            log.warning("lock_unavailable", service=service, reason=str(exc))
            self._not_before[service] = self.clock() + SYNC_EVERY
            return None
        if lock is None:
            log.info("lock_held_elsewhere", service=service, holder=self.lock_holder(service))
            self._not_before[service] = self.clock() + SYNC_EVERY  # until the next read shows who holds it
        self._refused_views.pop(service, None)
        return lock

    def _views_changed(self, service: str, action: policy.Action, why: str) -> None:
        reason = f"{service}: automatic {action.kind} to {action.to_site} not started: {why}; deciding again"
        log.info("views_changed", service=service, reason=reason)
        self.engine.emit(Event("views_changed", self.wall_clock(), service, None, reason,
                               {"run_kind": str(action.kind), "to": action.to_site}), reason=reason)

    async def _ready_to_run(self, service: str, lock: Lock) -> bool:
        """Holding the lock: adopt the cluster's active site, and refuse to run over an orphaned run (marking
        it interrupted). False (lock released) when the run must not start."""
        try:
            active = _json((await self.coordinator.read(active_key(service))).get(active_key(service), b""))
            if active:
                self._adopt_now(service, active)
            await self._write_acknowledgements(service, lock)  # first: an ack never covers an orphan found now
            orphans = await self._close_orphans(service, lock)
        except CoordinationUnavailable as exc:
            log.warning("lock_taken_but_store_unreadable", service=service, reason=str(exc))
            await self._release(lock)
            return False
        if orphans:
            await self._release(lock)
            self.engine.run_changed(service)
            return False
        return True

    def _adopt_now(self, service: str, active: dict[str, Any]) -> None:
        site = active.get("site")
        view = self.engine.services.get(service)
        if isinstance(site, str) and view is not None and view.active != site:
            self.engine.adopt_active(service, site, f"the cluster says {site} is active (run {active.get('run')})")

    def _fence(self, service: str, lock: Lock) -> Fence:
        holder = self._holder_value()
        fence = Fence(self, lock, {
            "vantage": self.vantage, "holder": holder, "token": lock.token, "service": service,
            "result": str(RunResult.RUNNING), "steps": [], "step": None,
        })
        self._fences[service] = fence
        return fence

    def _holder_value(self) -> dict[str, Any]:
        # what EtcdCoordinator writes at the lock key: a run is alive while that key still says so
        lease = getattr(self.coordinator, "lease_id", 0)
        return {"vantage": self.vantage, "lease": str(lease)}

    def _own(self, service: str, lock: Lock, fence: Fence, run: ActiveRun) -> None:
        request = run.request
        fence.record.update(
            run_id=run.id, runbook=request.runbook_name, kind=str(request.kind), trigger=request.trigger,
            reason=request.reason, to=request.to_site, dry_run=request.dry_run, forced=request.forced,
            started=run.started, ended=None, detail="", evidence=request.evidence.get("quorum"),
            acknowledged_by=None,
        )
        fence.record["from"] = request.from_site
        self._spawn(self._owner(service, lock, fence, run), owner=True)

    async def _owner(self, service: str, lock: Lock, fence: Fence, run: ActiveRun) -> None:
        try:
            with contextlib.suppress(LostLock):
                await fence.write_while_valid()  # the run's start, recorded (its first step waits for its own)
            if run.task is not None:
                await asyncio.wait({run.task})
            record = self.engine.runs.get(run.id)
            if record is not None:
                fence.record.update(result=record.result, ended=record.ended, detail=record.detail)
            if fence.problem() is None:
                try:
                    await fence.write()
                    if record is not None and record.result == str(RunResult.SUCCEEDED) and not record.dry_run:
                        value = json.dumps({"site": record.to_site, "run": f"{self.vantage}:{run.id}",
                                            "token": lock.token, "at": self.wall_clock()}).encode()
                        if await self.coordinator.fenced_put(lock, active_key(service), value):
                            log.info("active_recorded", service=service, site=record.to_site, token=lock.token)
                    await self._prune(service, lock)
                except (LostLock, CoordinationUnavailable) as exc:
                    log.warning("run_record_not_written", service=service, run_id=run.id, reason=str(exc))
            else:
                log.warning("lost_lock", service=service, run_id=run.id, token=lock.token, reason=fence.problem())
        finally:
            self._fences.pop(service, None)
            await self._release(lock)
            self._busy.discard(service)
            self.engine.refresh(service)

    async def _prune(self, service: str, lock: Lock) -> None:
        """Holding `lock`: delete the service's run records beyond the newest `keep_runs` (fenced)."""
        records = {key: _json(raw) for key, raw in (await self.coordinator.read(f"runs/{service}/")).items()}
        old = prunable(records, self.keep_runs)
        if old and await self.coordinator.fenced_delete(lock, old):
            log.info("run_records_pruned", service=service, deleted=len(old), kept=len(records) - len(old))

    async def _release(self, lock: Lock) -> None:
        try:
            await self.coordinator.release(lock)
        except Exception:  # release never stops the daemon: the lease ends the lock anyway
            log.exception("lock_release_failed", service=lock.service)

    # -- acknowledgements ----------------------------------------------------------------------------
    def acknowledged(self, service: str, by: str) -> None:
        """An operator acknowledged the service's runs here: the store learns it as soon as this instance
        holds the lock (at once if free, else with its next run or the next read after the holder let go)."""
        self._pending_acks[service] = by

    async def _acknowledge(self, service: str) -> None:
        try:
            lock = await self.coordinator.acquire(service)
            if lock is None:
                return  # held elsewhere: the next read tries again
            try:
                await self._write_acknowledgements(service, lock)
            finally:
                await self._release(lock)
        except CoordinationUnavailable:
            pass
        finally:
            self._busy.discard(service)

    async def _write_acknowledgements(self, service: str, lock: Lock) -> None:
        """Holding `lock`: write a pending acknowledgement into every unacknowledged finished record (fenced)."""
        by = self._pending_acks.get(service)
        if by is None:
            return
        for key, raw in (await self.coordinator.read(f"runs/{service}/")).items():
            record = _json(raw)
            if record.get("result") in NEEDS_ACK and not record.get("acknowledged_by"):
                record["acknowledged_by"] = by
                await self.coordinator.fenced_put(lock, key, json.dumps(record).encode())
        if self._pending_acks.get(service) == by:
            del self._pending_acks[service]
        log.info("acknowledgement_shared", service=service, by=by)


def prunable(records: dict[str, dict[str, Any]], keep: int) -> list[str]:
    """The keys of run records to delete: beyond the `keep` newest (by token), those that are finished and need
    no acknowledgement (or have one); an unfinished record or an unacknowledged failure stays whatever its age."""
    newest_first = sorted(records, key=lambda key: _token(records[key]), reverse=True)
    return [key for key in newest_first[keep:] if records[key].get("result") not in UNFINISHED
            and (records[key].get("result") not in NEEDS_ACK or records[key].get("acknowledged_by"))]


def _token(record: dict[str, Any]) -> int:
    try:
        return int(record.get("token", 0))
    except (TypeError, ValueError):
        return 0


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class ClusterCollector(Collector):
    """bcd_cluster_members, bcd_cluster_coordination_up, bcd_vantage_view_age_seconds, bcd_site_votes,
    bcd_lock_held."""

    def __init__(self, link: ClusterLink) -> None:
        self._link = link

    def collect(self) -> Iterable[GaugeMetricFamily]:
        link = self._link
        peers = link.peers()
        members = GaugeMetricFamily("bcd_cluster_members", "Live vantages whose view this instance sees.",
                                    labels=["vantage"])
        ages = GaugeMetricFamily("bcd_vantage_view_age_seconds", "Seconds since each vantage's view was written.",
                                 labels=["vantage"])
        if not link.suspect:
            members.add_metric([link.vantage], 1)
            ages.add_metric([link.vantage], 0.0)
        for vantage, peer in sorted(peers.items()):
            members.add_metric([vantage], 1)
            ages.add_metric([vantage], peer.age)
        yield members
        yield GaugeMetricFamily("bcd_cluster_coordination_up", "Whether coordination (etcd and our lease) is up.",
                                value=int(link.available))
        yield ages
        votes = GaugeMetricFamily("bcd_site_votes", "Live vantages seeing the site in each state.",
                                  labels=["service", "site", "state"])
        held = GaugeMetricFamily("bcd_lock_held", "Whether this instance holds the service's run lock.",
                                 labels=["service"])
        engine = link.engine
        for name, service in engine.config.services.items():
            for site in service.sites:
                counts = dict.fromkeys(SiteState, 0)
                for vote in link.votes(name, site):
                    counts[vote.state] += 1
                for state, count in counts.items():
                    votes.add_metric([name, site, str(state)], count)
            held.add_metric([name], int(link.holds(name)))
        yield votes
        yield held
