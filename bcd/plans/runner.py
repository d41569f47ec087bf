"""Recovery plan runs: started, resumed, aborted, gates approved and manual services marked done — the plan
intents of `bcd.operations`, each answered Accepted or Refused with the reason.

One run per plan at a time: the journal's plan-run table refuses a second open run of a plan (running, at a
gate, or interrupted), naming the one that holds it; in a cluster `lock` (bcd.plans.lock) takes the plan's
etcd lock first. At start `recover()` marks the runs the journal shows unfinished `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from bcd.config.plans import PlanConfig
from bcd.engine import Engine
from bcd.events import Event, EventKind, PlanStarted
from bcd.journal import Journal, JournalWriteError
from bcd.model import RunResult
from bcd.operations import (
    Abort,
    AbortPlan,
    Accepted,
    ApproveGate,
    Operations,
    Outcome,
    PlanDone,
    PlanIntent,
    Refusal,
    Refused,
    ResumePlan,
    RunPlan,
)
from bcd.plans import gates, planner
from bcd.plans.execute import Execution, Live
from bcd.plans.follow import Follower, PlanLock
from bcd.plans.lock import ClusterPlanLock
from bcd.plans.model import MoveState, PlanRun, PlanState
from bcd.plans.records import PlanBusy, PlanJournal
from bcd.view import EstateView

if TYPE_CHECKING:
    from bcd.cluster import ClusterLink

log = structlog.get_logger("bcd.plans")

class PlanRunner:
    def __init__(self, journal: Journal, operations: Operations, estate: EstateView,
                 emit: Callable[[Event], None], *, clock: Callable[[], float] = time.time,
                 lock: PlanLock | None = None) -> None:
        self.journal = PlanJournal(journal)
        self.estate = estate
        self.clock = clock
        self.execution = Execution(self.journal, operations, estate, self._announce, clock, shared=lock)
        self._emit = emit
        self._operations = operations
        self._lock = lock
        self.live: dict[int, Live] = {}  # plan run id -> its run in progress here
        self._listener: asyncio.Task[None] | None = None
        self._follower: asyncio.Task[None] | None = None
        self._deferred: set[asyncio.Task[None]] = set()  # automatic starts left to another instance first
        self.shared = Follower(self.journal, estate, lock, self.live)

    # -- lifetime ------------------------------------------------------------------------------------
    def recover(self) -> list[PlanRun]:
        """Mark the plan runs the journal shows unfinished (the daemon died during them) `interrupted`."""
        stale = self.journal.unfinished()
        for run in stale:
            self.journal.save(replace(run, state=PlanState.INTERRUPTED,
                                      detail=f"the daemon stopped during this plan run: bcd plan resume {run.id}"))
            log.warning("plan_run_interrupted", plan=run.plan, plan_run=run.id,
                        hint=f"bcd plan resume {run.id} (or bcd plan abort {run.id})")
        return stale

    def start(self) -> None:
        """Recover (see `recover`), then listen for runs' ends (what the moves wait for)."""
        self.recover()
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name="plan-runs")
        if self._lock is not None:
            self._follower = asyncio.get_running_loop().create_task(self.shared.follow(), name="plan-records")

    async def stop(self) -> None:
        """Stop: plan runs in progress are journaled `interrupted` (their moves in progress are the runner's)."""
        tasks = [live.task for live in self.live.values() if live.task is not None]
        tasks.extend(task for task in (self._listener, self._follower, *self._deferred) if task is not None)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        """Runs' ends (what moves wait for), and lost sites (what starts plans with `trigger: auto`)."""
        async with self.estate.subscription("plans", 10_000) as events:
            async for event in events:
                if event.kind is EventKind.RUN_FINISHED:
                    self.execution.run_ended(getattr(event.data, "run_id", 0))
                elif event.kind is EventKind.SITE_LOST and event.site is not None:
                    await self.site_lost(event.site, event.reason)

    async def site_lost(self, site: str, reason: str) -> list[Outcome]:
        """Start each plan with `trigger: auto` whose `from` is `site` that has something to move (in a cluster
        the plan's lock lets one instance start it, and a witness starts none; refusals are logged)."""
        outcomes = []
        for name, config in self.estate.config.plans.items():
            if config.trigger != "auto" or config.from_site != site:
                continue
            said = f"site {site} lost"  # the event's reason says so already (not twice)
            why = reason if reason.startswith(said) else f"{said}: {reason}"
            lock = self._lock
            who = lock.defer_to(config.to_site) if lock is not None and lock.executor else None
            if lock is not None and who is not None:
                log.info("plan_deferred", plan=name, site=site, to=who, grace=lock.grace,
                         hint=f"the executing instance in {who} starts it; this one tries after the grace")
                task = asyncio.get_running_loop().create_task(self._later(name, config, site, why))
                self._deferred.add(task)
                task.add_done_callback(self._deferred.discard)
                continue
            outcomes.append(await self._auto_logged(name, config, site, why))
        return outcomes

    async def _later(self, name: str, config: PlanConfig, site: str, why: str) -> None:
        assert self._lock is not None
        await asyncio.sleep(self._lock.grace)
        if site in self.estate.lost_sites:
            await self._auto_logged(name, config, site, why)

    async def _auto_logged(self, name: str, config: PlanConfig, site: str, why: str) -> Outcome:
        outcome = await self._auto(name, config, why)
        if isinstance(outcome, Refused):
            log.warning("plan_not_started", plan=name, site=site, why=outcome.reason)
        return outcome

    # -- intents -------------------------------------------------------------------------------------
    async def perform(self, intent: PlanIntent) -> Outcome:
        """Carry out a plan intent: Accepted (with the plan run) or Refused with the reason (also before `start`:
        the plan runs left unfinished are not recovered yet)."""
        if self._listener is None:
            return Refused(Refusal.UNAVAILABLE, "recovery plans are not started")
        try:
            if isinstance(intent, RunPlan):
                return await self._run(intent)
            run = self.journal.get(intent.run)
            if run is None:
                return Refused(Refusal.NOT_FOUND, f"no plan run {intent.run}")
            if isinstance(intent, ResumePlan):
                return await self._resume(run, intent.by)
            if isinstance(intent, AbortPlan):
                return await self._abort(run, intent)
            if isinstance(intent, PlanDone):
                return await self._done(run, intent)
            return self._approve(run, intent)
        except JournalWriteError as exc:
            return Refused(Refusal.UNAVAILABLE, str(exc))

    async def _auto(self, name: str, config: PlanConfig, reason: str) -> Outcome:
        if self._lock is not None and not self._lock.executor:
            return Refused(Refusal.CONFLICT, f"this instance ({self._lock.vantage}) runs no runbook "
                                             "(cluster.executor: false): an executing instance starts it")
        planned, _ = self.planned(name, config)
        if not any(move.group > 0 for move in planned.moves):
            return Refused(Refusal.CONFLICT, f"nothing to move: no service of plan {name} is active on "
                                             f"{config.from_site} (moved already?)")
        return await self.perform(RunPlan(name, "auto", reason))

    def plan_config(self, name: str) -> PlanConfig | None:
        return self.estate.config.plans.get(name)

    def planned(self, name: str, config: PlanConfig) -> tuple[planner.Planned, dict[str, float]]:
        """The plan on the estate as it is now, and the recorded durations of its services' failovers."""
        services = self.estate.config.services
        active = {service: state.active for service, state in self.estate.services.items()}
        runbooks = {service: s.failover.runbook for service, s in services.items() if s.failover is not None}
        seconds = self.journal.durations(runbooks)
        planned = planner.plan(config, services, active, seconds)
        first = gates.required(self.estate.config.require_approval, services, planned.moves)
        return (planned if first is None else replace(planned, gates=(first, *planned.gates))), seconds

    async def _run(self, intent: RunPlan) -> Outcome:
        config = self.plan_config(intent.plan)
        if config is None:
            return Refused(Refusal.NOT_FOUND, f"no plan named {intent.plan!r}")
        planned, seconds = self.planned(intent.plan, config)
        if intent.dry_run:
            return Accepted(planner.describe(intent.plan, config, planned, seconds))
        if self._lock is not None and not self._lock.executor:
            return Refused(Refusal.CONFLICT, f"this instance ({self._lock.vantage}) runs no runbook "
                                             "(cluster.executor: false): ask an executing instance")
        held = await self._take(intent.plan)
        if isinstance(held, Refused):
            return held
        held_text, token = held
        run = PlanRun(token or 0, intent.plan, config.from_site, config.to_site, intent.by, intent.reason,
                      intent.force, self.clock(), PlanState.RUNNING, planned.moves, planned.gates,
                      objective=config.objective,
                      events=(f"started by {intent.by}" + (" (forced)" if intent.force else "") + held_text,),
                      holder=self._lock.vantage if self._lock is not None else None, token=token, drill=intent.drill)
        try:
            run = self.journal.create(run)
            shared = await self._share(run)
        except (PlanBusy, JournalWriteError) as exc:
            await self._release(intent.plan)
            if isinstance(exc, JournalWriteError):
                raise
            return Refused(Refusal.CONFLICT, f"one run of a plan at a time: {exc.holder}")
        if shared is not None:
            return shared
        log.info("plan_started", plan=run.plan, plan_run=run.id, by=intent.by, reason=intent.reason,
                 forced=intent.force, groups=len(run.groups))
        self._announce(Event(EventKind.PLAN_STARTED, self.clock(), None, config.from_site,
                             f"{intent.by}: {intent.reason}" + (" (forced)" if intent.force else ""),
                             PlanStarted(run.plan, run.id, run.from_site, run.to_site, len(run.groups),
                                         sum(m.group > 0 for m in run.moves))))
        self._launch(Live(run, config, drill=intent.drill))
        return Accepted(f"plan run {run.id} of {run.plan} started: {len(run.groups)} group(s)", plan_run=run)

    async def _take(self, plan: str) -> tuple[str, int | None] | Refused:
        """In a cluster, the plan's lock (" under plan lock token N" to journal, and N), or the refusal naming its
        holder; alone, ("", None) (the journal's own lock is enough)."""
        if self._lock is None:
            return "", None
        token, holder = await self._lock.take(plan)
        if token is None:
            return Refused(Refusal.CONFLICT, f"plan {plan} is running elsewhere: its lock is held by {holder}")
        return f" under plan lock token {token}", token

    async def _share(self, run: PlanRun) -> Refused | None:
        """In a cluster, write the run as its plan's shared record (holding the plan's lock); when that fails,
        the run is journaled failed, the lock released, and the refusal returned."""
        if self._lock is None or await self._lock.publish(run):
            return None
        why = "the plan run could not be shared through etcd (coordination unavailable or the plan's lock lost)"
        self.journal.save(replace(run, state=PlanState.FAILED, ended=self.clock(), detail=why, seq=run.seq + 1))
        await self._release(run.plan)
        return Refused(Refusal.UNAVAILABLE, f"plan run {run.id} not started: {why}")

    async def _write_idle(self, run: PlanRun) -> PlanRun | Refused:
        """Journal a change of a run in progress nowhere (interrupted); in a cluster under the plan's lock, taken
        for the write and shared, so that every instance keeps it (refused naming the holder when another holds
        it: the run is in progress there)."""
        if self._lock is None:
            self.journal.save(run)
            return run
        held = await self._take(run.plan)
        if isinstance(held, Refused):
            return held
        run = replace(run, holder=self._lock.vantage, token=held[1], seq=0)
        try:
            self.journal.save(run)
            shared = await self._lock.publish(run)
        finally:
            await self._release(run.plan)
        if not shared:
            return Refused(Refusal.UNAVAILABLE, f"plan run {run.id} changed here but not shared through etcd "
                                                "(coordination unavailable): the other instances do not know")
        return run

    async def _release(self, plan: str) -> None:
        if self._lock is not None:
            await self._lock.release(plan)

    def _launch(self, live: Live) -> None:
        self.live[live.run.id] = live
        live.task = asyncio.get_running_loop().create_task(self._execute(live), name=f"plan-run-{live.run.id}")

    async def _execute(self, live: Live) -> None:
        try:
            await self.execution.execute(live)
            await self.execution.flush(live)  # the end is shared before the plan's lock goes
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug fails the plan run (and is logged), never the daemon
            log.exception("plan_run_crashed", plan_run=live.run.id)
            with contextlib.suppress(JournalWriteError):
                self.execution.save(live, replace(live.run, state=PlanState.FAILED, ended=self.clock(),
                                                  detail=f"internal error: {exc!r}"))
        finally:
            self.live.pop(live.run.id, None)
            await self._release(live.run.plan)

    async def _resume(self, run: PlanRun, by: str) -> Outcome:
        if run.state is not PlanState.INTERRUPTED:
            return Refused(Refusal.CONFLICT, f"plan run {run.id} is {run.state}, not interrupted")
        config = self.plan_config(run.plan)
        if config is None:
            return Refused(Refusal.CONFLICT, f"plan {run.plan} is no longer configured")
        run, blocked = self._settle(run, config)
        if blocked:
            self.journal.save(run)
            return Refused(Refusal.CONFLICT, blocked)
        held = await self._take(run.plan)
        if isinstance(held, Refused):
            return held
        held_text, token = held
        run = replace(run, state=PlanState.RUNNING, detail="", events=(*run.events, f"resumed by {by}{held_text}"),
                      gates=tuple(replace(g, state="closed") if g.state == "waiting" else g for g in run.gates))
        if self._lock is not None:
            run = replace(run, holder=self._lock.vantage, token=token, seq=0)
        try:
            self.journal.save(run)
        except JournalWriteError:
            await self._release(run.plan)
            raise
        refused = await self._share(run)
        if refused is not None:
            return refused
        log.info("plan_resumed", plan=run.plan, plan_run=run.id, by=by)
        self._launch(Live(run, config))
        return Accepted(f"plan run {run.id} of {run.plan} resumed", plan_run=run)

    def _settle(self, run: PlanRun, config: PlanConfig) -> tuple[PlanRun, str]:
        """Each move cut short by the stop, settled from its run's record: succeeded is moved; interrupted (or
        failed) and acknowledged is failed; otherwise it blocks the resume (the returned sentence says why)."""
        blocked: list[str] = []
        for move in run.moves:
            if move.state not in (MoveState.MOVING, MoveState.BLOCKED):
                continue
            run_id = self.shared.local_run_id(move)
            record = self.estate.run(run_id) if run_id is not None else None
            if record is not None and record.result is RunResult.SUCCEEDED:
                run = run.with_move(replace(move, state=MoveState.MOVED, reason=f"run {record.id} succeeded",
                                            ended=record.ended))
            elif record is not None and record.acknowledged_by is not None:
                run = run.with_move(replace(move, state=MoveState.FAILED, ended=record.ended, reason=(
                    f"run {record.id} {record.result}, acknowledged by {record.acknowledged_by}")))
            else:
                what = f"run {move.run_id} was cut short" if record is not None else "its run was never recorded"
                run = run.with_move(replace(move, state=MoveState.BLOCKED, reason=what))
                blocked.append(f"{move.service} ({what}: bcd ack {move.service}, or bcd plan done {run.id} "
                               f"{move.service})")
        if blocked:
            return run, "blocked: " + "; ".join(blocked)
        failed = [m.service for m in run.moves if m.state is MoveState.FAILED]
        if failed and config.on_service_failure == "stop":
            return run, (f"{', '.join(failed)} failed and the plan stops on failure: mark it done "
                         f"(bcd plan done {run.id} SERVICE) to go on")
        return run, ""

    async def _abort(self, run: PlanRun, intent: AbortPlan) -> Outcome:
        live = self.live.get(run.id)
        if live is None:
            if run.state is not PlanState.INTERRUPTED:
                return Refused(Refusal.CONFLICT, f"plan run {run.id} is {run.state}: nothing to abort"
                                                 + self._elsewhere(run))
            run = replace(run, state=PlanState.ABORTED, ended=self.clock(), detail=f"aborted by {intent.by}",
                          events=(*run.events, f"aborted by {intent.by}"))
            written = await self._write_idle(run)
            if isinstance(written, Refused):
                return written
            return Accepted(f"plan run {run.id} aborted", plan_run=written)
        live.aborted_by = intent.by
        live.stopping = f"aborted by {intent.by}" + (" (moves in progress aborted)" if intent.now else "")
        self.execution.save(live, replace(live.run, events=(*live.run.events, live.stopping)))
        if live.gate is not None and not live.gate.done():
            live.gate.set_result("")
        for waiting in live.manual.values():
            if not waiting.done():
                waiting.set_result("")
        aborted = []
        if intent.now:
            for move in live.run.moves:
                if move.state is MoveState.MOVING and move.run_id is not None:
                    outcome = await self._operations.perform(Abort(move.run_id, intent.by, move.service,
                                                                   f"plan run {run.id} aborted"))
                    if isinstance(outcome, Accepted):
                        aborted.append(move.service)
        detail = f"plan run {run.id}: no more moves start" + (f"; aborted {', '.join(aborted)}" if aborted else "")
        return Accepted(detail, plan_run=live.run)

    async def _done(self, run: PlanRun, intent: PlanDone) -> Outcome:
        move = run.move(intent.service)
        if move is None:
            return Refused(Refusal.NOT_FOUND, f"{intent.service} is not in plan run {run.id}")
        live = self.live.get(run.id)
        waiting = live.manual.get(intent.service) if live is not None else None
        if waiting is not None and not waiting.done():
            waiting.set_result(intent.by)
            return Accepted(f"{intent.service} marked done in plan run {run.id}", plan_run=run)
        if move.state not in (MoveState.BLOCKED, MoveState.FAILED, MoveState.MOVING, MoveState.MANUAL) or (
                live is not None):
            return Refused(Refusal.CONFLICT, f"{intent.service} is {move.state} in plan run {run.id}: "
                                             "nothing to mark done")
        run = run.with_move(replace(move, state=MoveState.DONE, reason=f"marked done by {intent.by}",
                                    ended=self.clock()))
        written = await self._write_idle(replace(run, events=(*run.events, f"{intent.service} marked done by "
                                                                         f"{intent.by}")))
        if isinstance(written, Refused):
            return written
        return Accepted(f"{intent.service} marked done in plan run {run.id}", plan_run=written)

    def _approve(self, run: PlanRun, intent: ApproveGate) -> Outcome:
        """Count an approval of the gate the run waits at, unless four eyes refuse it (journaled either way, in
        the run's events); the gate opens once it has its approvers."""
        live = self.live.get(run.id)
        gate = next((g for g in live.run.gates if g.state == "waiting"), None) if live is not None else None
        if live is None or gate is None or live.gate is None or live.gate.done():
            return Refused(Refusal.CONFLICT, f"plan run {run.id} is not waiting at a gate" + self._elsewhere(run))
        why = gates.refusal(live.run, gate, intent.by)
        if why is not None:
            self.execution.save(live, replace(live.run, events=(*live.run.events, f"approval refused: {why}")))
            log.warning("plan_approval_refused", plan=run.plan, plan_run=run.id, by=intent.by, why=why)
            return Refused(Refusal.CONFLICT, why)
        gate = replace(gate, approvals=(*gate.approvals, intent.by))
        self.execution.save(live, replace(live.run.with_gate(gate), events=(
            *live.run.events, f"gate before {gate.before} approved by {intent.by}")))
        log.info("plan_approval_given", plan=run.plan, plan_run=run.id, by=intent.by,
                 approvals=list(gate.approvals), needed=gate.approvers)
        missing = gate.approvers - len(gate.approvals)
        if missing > 0:
            return Accepted(f"plan run {run.id} approved by {intent.by}; {missing} more approval(s) needed",
                            plan_run=live.run)
        live.gate.set_result(", ".join(gate.approvals))
        return Accepted(f"plan run {run.id}: gate approved by {', '.join(gate.approvals)}", plan_run=live.run)

    def _elsewhere(self, run: PlanRun) -> str:
        """Where an open run not in progress here is in progress (its holder), for a refusal: "" otherwise."""
        if self._lock is None or run.holder in (None, self._lock.vantage) or run.state not in (
                PlanState.RUNNING, PlanState.WAITING_GATE):
            return ""
        return f" here: it is {run.state} on the instance at vantage {run.holder}, ask that one"

    # -- for the view --------------------------------------------------------------------------------
    def running(self) -> list[PlanRun]:
        return [live.run for live in self.live.values()]

    def _announce(self, event: Event) -> None:
        self._emit(event)


def daemon_plans(journal: Journal, engine: Engine, estate: EstateView, cluster: ClusterLink | None) -> PlanRunner:
    """The daemon's plan runner, acting through operations of its own (without plans: a plan never starts a
    plan); in a cluster with the plans' etcd locks. `start` it after the runner, stop it before: a plan run is
    interrupted, then its moves."""
    lock = None if cluster is None else ClusterPlanLock(
        cluster.coordinator, cluster.vantage, cluster.executor, executors=cluster.views.executors,
        prefer_target_site=cluster.preference.prefer_target_site, grace=cluster.preference.grace)
    return PlanRunner(journal, Operations(engine), estate, engine.emit, lock=lock)
