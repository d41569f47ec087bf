"""The cluster link: exactly one executor per service. A run starts only once this instance holds the service's
lock; runs of other instances are followed through their records (see the package docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

import structlog

from bcd import policy
from bcd.cluster.acks import write_acknowledgements
from bcd.cluster.fence import Fence
from bcd.cluster.figures import ClusterFigures
from bcd.cluster.mirror import Mirror
from bcd.cluster.preference import Preference
from bcd.cluster.records import KEEP_RUNS, ActiveSite, Holder, RemoteRun, RunLedger, decoded, prunable
from bcd.cluster.views import VIEW_MIN_GAP, PeerView, Views
from bcd.coordination import CoordinationUnavailable, Coordinator, Lock, ViewsChanged, active_key
from bcd.engine import Engine, RequestRefused
from bcd.events import Event, EventKind, RunNotStarted
from bcd.journal import JournalWriteError
from bcd.lifetime import repeat, until_cancelled
from bcd.model import Guard, RunKind, RunResult, ServiceStatus
from bcd.policy import Quorum, Request, RunInfo, Verdict, Vote
from bcd.runbooks.runner import ActiveRun, LostLock

log = structlog.get_logger("bcd.cluster")

SYNC_EVERY = 0.5  # the watched run records, locks and active sites are gone through this often (no request)


class ClusterLink:
    """Views, votes and the lock bridge of one instance (`vantage`). See the package docstring; `preference`
    says whether it takes a lock (a witness never does) and when; `reprobe(site, reason)` is called when another
    vantage's view newly shows a site failing that is up here."""

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
        preference: Preference | None = None,
        reprobe: Callable[[str, str], object] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.engine = engine
        self.vantage = vantage
        # without one: an executing instance that takes the lock at once (the config's default prefers the target's)
        self.preference = preference or Preference(vantage=vantage, prefer_target_site=False, clock=clock)
        self.executor = self.preference.executor
        self.views = Views(coordinator, engine, vantage=vantage, executor=self.executor, quorum=quorum,
                           lease_ttl=lease_ttl, clock=clock, wall_clock=wall_clock, reprobe=reprobe)
        self.ledger = RunLedger(vantage)
        self.mirror = Mirror(engine, self.ledger, vantage=vantage, wall_clock=wall_clock)
        self.margin = call_timeout  # steps stop this long before the lock's validity ends
        self.clock = clock
        self.wall_clock = wall_clock
        self.keep_runs = keep_runs
        self._tasks: set[asyncio.Task[None]] = set()
        self._owners: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()  # services with a lock acquisition (or a held lock) of ours in flight
        self._not_before: dict[str, float] = {}  # service -> no automatic acquisition before (the lock was taken)
        self._refused_at: dict[str, int] = {}  # service -> the store revision its views were found changed at
        self._lost_to: dict[str, str] = {}  # service -> who held the lock when our acquisition found it taken
        self._pending_acks: dict[str, str] = {}  # service -> who acknowledged, until written to the store
        self._fences: dict[str, Fence] = {}

    # -- lifecycle -----------------------------------------------------------------------------------
    async def run(self, ready: asyncio.Event) -> None:
        """Its lifetime (bcd.lifetime): ready once the coordinator has started; when cancelled, `stop()`."""
        try:
            await self.start()
            ready.set()
            await until_cancelled()
        finally:
            await self.stop()

    async def start(self) -> None:
        self.ledger.load_mirrored(self.engine.runs.recent(None, 1000))
        await self.coordinator.start()
        self._spawn(repeat("cluster-views", VIEW_MIN_GAP, self.views.publish_once, (CoordinationUnavailable,)))
        self._spawn(repeat("cluster-sync", SYNC_EVERY, self._sync_once, (CoordinationUnavailable,)))

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

    def lost(self, service: str) -> None:
        """The coordinator's on_lost: a lock of ours is gone (its lease lapsed or the fence refused a write)."""
        fence = self._fences.get(service)
        if fence is not None:
            fence.lose(f"the lock of {service} (token {fence.token}) was lost")

    @property
    def available(self) -> bool:
        return self.coordinator.available

    @property
    def suspect(self) -> bool:
        """Whether this vantage suspects its own network (its view withdrawn, not voting)."""
        return self.views.suspect

    # -- what the engine, the API and the metrics ask -----------------------------------------------
    def peers(self) -> dict[str, PeerView]:
        return self.views.peers()

    def votes(self, service: str, site: str) -> list[Vote]:
        return self.views.votes(service, site)

    def quorum(self, service: str, active: str) -> Quorum:
        return self.views.quorum(service, active)

    def counted_views(self) -> dict[str, int]:
        return self.views.counted_views()

    def evidence(self, service: str, active: str) -> dict[str, Any]:
        return self.views.evidence(service, active)

    def figures(self) -> ClusterFigures:
        """What /metrics shows of the cluster (bcd.outputs.metrics.ClusterCollector)."""
        return self.views.figures({name: service.sites for name, service in self.engine.config.services.items()},
                                  self.holds)

    def holds(self, service: str) -> bool:
        """Whether this instance holds the service's lock for a run of its own."""
        return service in self._fences

    def lock_holder(self, service: str) -> str | None:
        """Who holds the service's lock: this instance while it has the fence; otherwise the last read of
        etcd, and nobody known while etcd cannot be read (a lost lock of ours is never shown as held)."""
        if service in self._fences:
            return self.vantage
        holder = self.ledger.locks.get(service) if self.available else None
        vantage = holder.vantage if holder is not None else self._lost_to.get(service)
        return None if vantage == self.vantage else vantage

    def service_json(self, service: str) -> dict[str, Any]:
        """What the API adds to a service in a cluster."""
        holder = self.lock_holder(service)
        return {"views": self.views.views_of(service), "executor": self.executor,
                "lock": {"holder": holder, "held_here": service in self._fences} if holder else None,
                "coordination": "up" if self.available else "down"}

    def remote_run(self, service: str) -> RunInfo | None:
        """A run of `service` by another instance, in progress as far as the store says."""
        run = self.ledger.remote_run(service, held_here=service in self._fences)
        if run is not None:
            self.preference.forget(service)
        return run

    # -- runs elsewhere ------------------------------------------------------------------------------
    async def _sync_once(self) -> None:
        if not self.available:
            return
        # records and locks as the watch left them at one revision ("unfinished, lock not its holder's": orphaned)
        changed = self.ledger.follow(self.coordinator.records_version, self.coordinator.records)
        self._lost_to.clear()  # the ledger knows the holders now
        for service, active in self.ledger.actives.items():
            self._adopt(service, active)
        held = {service: fence.token if (fence := self._fences.get(service)) else None
                for service in self.engine.services}
        for service in self.mirror.reconcile_all(held):
            if self.executor and service not in self._busy:  # a witness leaves it to the next holder
                self._busy.add(service)
                self._spawn(self._mark_orphans(service))
        for service in list(self._pending_acks):
            if service not in self._busy:
                self._busy.add(service)
                self._spawn(self._acknowledge(service))
        for service in changed & set(self.engine.services):
            self.engine.refresh(service)

    def _adopt(self, service: str, active: ActiveSite) -> None:
        site = active.site
        view = self.engine.services.get(service)
        if view is None or view.active == site or service in self._busy:
            return
        runner = self.engine.runner
        if runner is not None and service in runner.active:
            return
        log.info("active_adopted", service=service, site=site, run=active.run, token=active.token)
        self.engine.adopt_active(service, site, f"the cluster says {site} is active (run {active.run}, "
                                                f"token {active.token})")

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

    async def _close_orphans(self, service: str, lock: Lock) -> list[RemoteRun]:
        """Holding `lock`: every unfinished run record of the service is an orphan; mark each interrupted
        (in the store, and here if it is not journaled here yet). Returns them."""
        orphans = []
        for key, raw in (await self.coordinator.read(f"runs/{service}/")).items():
            run = self.ledger.parse(key, raw)
            if run is None or not run.unfinished:
                continue
            orphans.append(run)
            if run.vantage != self.vantage and run.token not in self.ledger.mirrored:
                self.mirror.journal(service, run, orphaned=True)
            marked = replace(run, result=RunResult.INTERRUPTED, ended=self.wall_clock(),
                             detail=f"lost_lock: the holder lost the lock before the run finished; marked by "
                                    f"{self.vantage}; no step was re-run")
            await self.coordinator.fenced_put(lock, key, marked.to_json())
            log.warning("orphaned_run_marked_interrupted", service=service, remote_run=key, token=run.token)
        return orphans

    # -- starting runs under the lock ----------------------------------------------------------------
    def start_automatic(self, service: str, action: policy.Action, reason: str) -> policy.Decision | None:
        """Take the lock and start the run (in a task), or say whom this instance waits for: the Decision the
        service shows instead of "starting failover" (None: the policy's own)."""
        views = self.counted_views()  # the views this decision counted, read in the same loop iteration
        seen_at = self.coordinator.views_revision()  # ... and the revision up to which it could see them all
        if service in self._busy:
            return None  # an acquisition (or our run) is in flight
        wait = self.preference.wait(service, action, self.views.executors(), self.lock_holder(service))
        if wait is not None:  # a waiting service is decided again every second (Engine.tick): so is the grace
            status = ServiceStatus.FAILOVER_PENDING if action.dry_run else ServiceStatus.FAILING_OVER
            return policy.Decision(status, wait.reason(service, action), wait.guard)
        if self.clock() < self._not_before.get(service, 0.0):
            return None  # the lock was just found taken (by whom: not known yet)
        if seen_at < self._refused_at.get(service, 0):
            return None  # the views changed in the store: decide again once the change has arrived here
        self._busy.add(service)
        self._spawn(self._automatic(service, action, views, seen_at))
        return None

    async def _automatic(self, service: str, action: policy.Action, views: dict[str, int], seen_at: int) -> None:
        try:
            lock = await self._acquire(service, action, views, seen_at)
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
        refusal = self.preference.refusal("runs no runbook", self.views.executors())
        if refusal is not None:
            raise RequestRefused(refusal)
        trigger = "plan" if request.plan is not None else "drill" if request.drill else by  # `plan`, `drill`
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
                    service, request.kind, to_site, trigger,
                    trigger_reason + "; coordination unavailable: this instance's local lock only",
                    dry_run=request.dry_run, forced=True, plan=request.plan, drill=request.drill)
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
                run = self.engine.start_run(service, request.kind, verdict.to_site, trigger, trigger_reason,
                                            dry_run=request.dry_run, forced=request.force, fence=fence,
                                            plan=request.plan, drill=request.drill)
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

    async def _acquire(self, service: str, action: policy.Action, views: dict[str, int],
                       seen_at: int) -> Lock | None:
        try:
            lock = await self.coordinator.acquire(service, views, seen_at)
        except ViewsChanged as exc:
            self._refused_at[service] = exc.revision
            self._views_changed(service, action, str(exc))
            return None
        except CoordinationUnavailable as exc:
            log.warning("lock_unavailable", service=service, reason=str(exc))
            self._not_before[service] = self.clock() + SYNC_EVERY
            return None
        if lock is None:
            await self._note_holder(service)
            log.info("lock_held_elsewhere", service=service, holder=self.lock_holder(service))
            self._not_before[service] = self.clock() + SYNC_EVERY  # until the next read shows who holds it
        self._refused_at.pop(service, None)
        return lock

    async def _note_holder(self, service: str) -> None:
        """Read who holds the lock we found taken, so that we say whom we wait for before the next sync."""
        key = f"locks/{service}"
        with contextlib.suppress(CoordinationUnavailable):
            holder = Holder.from_json(decoded((await self.coordinator.read(key)).get(key, b"")))
            if holder is not None:
                self._lost_to[service] = holder.vantage

    def _views_changed(self, service: str, action: policy.Action, why: str) -> None:
        reason = f"{service}: automatic {action.kind} to {action.to_site} not started: {why}; deciding again"
        log.info("views_changed", service=service, reason=reason)
        self.engine.emit(Event(EventKind.VIEWS_CHANGED, self.wall_clock(), service, None, reason,
                               RunNotStarted(str(action.kind), action.to_site)), reason=reason)

    async def _ready_to_run(self, service: str, lock: Lock) -> bool:
        """Holding the lock: adopt the cluster's active site, and refuse to run over an orphaned run (marking
        it interrupted). False (lock released) when the run must not start."""
        try:
            active = ActiveSite.from_json((await self.coordinator.read(active_key(service))).get(active_key(service),
                                                                                                b""))
            if active is not None:
                self._adopt_now(service, active)
            # first: an ack never covers an orphan found now
            await write_acknowledgements(self.coordinator, self.ledger, self._pending_acks, service, lock)
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

    def _adopt_now(self, service: str, active: ActiveSite) -> None:
        view = self.engine.services.get(service)
        if view is not None and view.active != active.site:
            self.engine.adopt_active(service, active.site, f"the cluster says {active.site} is active (run "
                                                           f"{active.run})")

    def _fence(self, service: str, lock: Lock) -> Fence:
        # the holder is what EtcdCoordinator writes at the lock key: a run is alive while that key still says so
        holder = Holder(self.vantage, str(getattr(self.coordinator, "lease_id", 0)))
        record = RemoteRun(self.vantage, lock.token, service, RunResult.RUNNING, holder=holder)
        fence = Fence(self.coordinator, lock, record, clock=self.clock, margin=self.margin)
        self._fences[service] = fence
        return fence

    def _own(self, service: str, lock: Lock, fence: Fence, run: ActiveRun) -> None:
        request = run.request
        fence.record = replace(
            fence.record, run_id=run.id, runbook=request.runbook_name, kind=RunKind(request.kind),
            trigger=request.trigger, reason=request.reason, from_site=request.from_site, to_site=request.to_site,
            dry_run=request.dry_run, forced=request.forced, started=run.started, ended=None, detail="",
            evidence=request.evidence.get("quorum"), acknowledged_by=None, drill=request.evidence.get("drill"),
        )
        self.preference.forget(service)
        self._spawn(self._owner(service, lock, fence, run), owner=True)

    async def _owner(self, service: str, lock: Lock, fence: Fence, run: ActiveRun) -> None:
        try:
            with contextlib.suppress(LostLock):
                await fence.write_while_valid()  # the run's start, recorded (its first step waits for its own)
            if run.task is not None:
                await asyncio.wait({run.task})
            record = self.engine.runs.get(run.id)
            if record is not None:
                fence.record = replace(fence.record, result=RunResult(record.result), ended=record.ended,
                                       detail=record.detail)
            if fence.problem() is None:
                try:
                    await fence.write()
                    if record is not None and record.result == str(RunResult.SUCCEEDED) and not record.dry_run:
                        value = ActiveSite(record.to_site, f"{self.vantage}:{run.id}", lock.token, self.wall_clock())
                        if await self.coordinator.fenced_put(lock, active_key(service), value.to_json()):
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
        read = await self.coordinator.read(f"runs/{service}/")
        old = prunable({key: self.ledger.parse(key, raw) for key, raw in read.items()}, self.keep_runs)
        if old and await self.coordinator.fenced_delete(lock, old):
            log.info("run_records_pruned", service=service, deleted=len(old), kept=len(read) - len(old))

    async def _release(self, lock: Lock) -> None:
        try:
            await self.coordinator.release(lock)
        except Exception:  # release never stops the daemon: the lease ends the lock anyway
            log.exception("lock_release_failed", service=lock.service)

    # -- acknowledgements ----------------------------------------------------------------------------
    def acknowledged(self, service: str, by: str) -> None:
        """An operator acknowledged the service's runs here: the store learns it as soon as this instance
        holds the lock (at once if free, else with its next run or the next read after the holder let go). A
        witness takes no lock: RequestRefused, before anything is acknowledged here."""
        refusal = self.preference.refusal("takes no lock, so it cannot share an acknowledgement",
                                          self.views.executors())
        if refusal is not None:
            raise RequestRefused(refusal)
        self._pending_acks[service] = by

    async def _acknowledge(self, service: str) -> None:
        try:
            lock = await self.coordinator.acquire(service)
            if lock is None:
                return  # held elsewhere: the next read tries again
            try:
                await write_acknowledgements(self.coordinator, self.ledger, self._pending_acks, service, lock)
            finally:
                await self._release(lock)
        except CoordinationUnavailable:
            pass
        finally:
            self._busy.discard(service)
