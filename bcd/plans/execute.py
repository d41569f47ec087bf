"""Carrying out one plan run: group after group, at most `parallel` moves at once, each service moved by its
own failover runbook through `bcd.operations` (the same guards, lock and journal as an operator's failover).

A group starts once every move of the group before it has ended, and after the gate between them (if any) is
approved; so a dependent's first step comes only after each of its dependencies' runs succeeded. A failed
service's dependents are skipped with the reason (`on_service_failure: continue`), or nothing more starts
(`stop`). Every change of the run is journaled before it is announced, and a move is journaled `moving`
before its run is asked for: after a crash, a move that was started is never started again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import structlog

from bcd import dependencies
from bcd.events import Event, EventKind, PlanFinished, PlanGateWaiting, PlanGroupStarted, PlanServiceMoved
from bcd.journal import JournalWriteError
from bcd.model import PlanRef, RunKind, RunResult
from bcd.operations import Accepted, Operations, Transfer
from bcd.plans.model import FINISHED_MOVES, Move, MoveState, PlanRun, PlanState
from bcd.plans.records import PlanJournal

if TYPE_CHECKING:
    from bcd.config.plans import PlanConfig
    from bcd.view import EstateView

log = structlog.get_logger("bcd.plans")

FAILED_DEPENDENCY = frozenset({MoveState.FAILED, MoveState.BLOCKED, MoveState.SKIPPED})
"""A grouped service in one of these states has not moved: its dependents in the plan cannot move."""


@dataclass
class Live:
    """A plan run in progress in this process: its record and what operators can do to it."""

    run: PlanRun
    config: PlanConfig
    task: asyncio.Task[None] | None = None
    stopping: str = ""  # why nothing more starts (an abort, a failure with `stop`)
    aborted_by: str | None = None
    gate: asyncio.Future[str] | None = None
    manual: dict[str, asyncio.Future[str]] = field(default_factory=dict)  # service -> done by whom
    needs: dict[str, list[str]] | None = None  # the dependencies among the run's services (worked out once)
    lost: bool = False  # in a cluster: this instance lost the plan's lock (another may resume the run)
    shared_seq: int = -1  # the run's `seq` last written to etcd
    sharing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one write of the shared record at a time
    drill: str | None = None  # a plan drill's (bcd.drills.plan): each move a leg of it
    unsaved: list[Move] = field(default_factory=list)  # moves changed in `run` since it was last journaled
    saving: asyncio.Future[None] | None = None  # done once they are journaled (`Execution.journaled`)


class Shared(Protocol):
    """In a cluster, the plan's lock and shared record (bcd.plans.lock.ClusterPlanLock)."""

    vantage: str

    def holds(self, plan: str) -> bool: ...

    async def publish(self, run: PlanRun) -> bool: ...


LOST_LOCK = ("this instance lost the plan's lock (its lease lapsed, or a fenced write was refused): no more "
             "moves start here; another instance may resume the run")


class Execution:
    """Runs plan runs; `PlanRunner` decides which, and records operators' actions."""

    def __init__(self, journal: PlanJournal, operations: Operations, estate: EstateView,
                 emit: Callable[[Event], None], clock: Callable[[], float], *, shared: Shared | None = None) -> None:
        self.journal = journal
        self.shared = shared
        self._writes: set[asyncio.Task[bool]] = set()
        self.operations = operations
        self.estate = estate
        self._emit = emit
        self.clock = clock
        self._ended: dict[int, asyncio.Event] = {}  # run id -> set when the run's end was announced

    # -- the journal and the bus ---------------------------------------------------------------------
    def save(self, live: Live, run: PlanRun) -> None:
        """Journal the run's new state (JournalWriteError: the change did not happen), then keep it; in a cluster
        it is shared through etcd as soon as it can be (`flush` waits for that)."""
        run = replace(run, seq=run.seq + 1)
        self.journal.save(run)
        live.run = run
        if self.shared is not None and not live.lost:
            task = asyncio.get_running_loop().create_task(self.flush(live))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def flush(self, live: Live) -> bool:
        """In a cluster, write the run as it is now to etcd, unless already written: False (and no more moves
        start here) once this instance has lost the plan's lock. Alone: True."""
        if self.shared is None:
            return True
        async with live.sharing:
            run = live.run
            if live.lost or live.shared_seq >= run.seq:
                return not live.lost
            if await self.shared.publish(run):
                live.shared_seq = run.seq
                return True
        self.lose(live)
        return False

    def lose(self, live: Live) -> None:
        if not live.lost:
            live.lost = True
            live.stopping = LOST_LOCK
            log.warning("plan_lock_lost", plan=live.run.plan, plan_run=live.run.id, hint=LOST_LOCK)

    def set_move(self, live: Live, move: Move) -> None:
        """Change one service's move in the run at once; it is journaled, then announced, with the other moves
        changed in this iteration of the event loop: one write of the run's record for the moves that start
        or end together, not one each. `journaled()` waits for that write."""
        live.run = live.run.with_move(move)
        live.unsaved.append(move)
        if live.saving is None:
            loop = asyncio.get_running_loop()
            live.saving = loop.create_future()
            live.saving.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
            loop.call_soon(self.write_moves, live)

    async def journaled(self, live: Live) -> None:
        """Return once every move changed so far is journaled (JournalWriteError: it could not be)."""
        if live.saving is not None:
            await asyncio.shield(live.saving)

    def write_moves(self, live: Live) -> None:
        """Journal the moves changed since the last write, then announce them. The journal failing: they are
        kept for the next write, and whoever waits in `journaled()` gets the JournalWriteError."""
        saving, live.saving = live.saving, None
        moves, live.unsaved = live.unsaved, []
        try:
            if moves:
                self.save(live, live.run)
        except JournalWriteError as exc:
            live.unsaved[:0] = moves
            if saving is None:
                raise
            saving.set_exception(exc)
            return
        if saving is not None:
            saving.set_result(None)
        run = live.run
        for move in moves:
            self.emit(EventKind.PLAN_SERVICE_MOVED, run, f"plan run {run.id}: {move.service} {move.state}"
                      + (f": {move.reason}" if move.reason else ""),
                      PlanServiceMoved(run.plan, run.id, move.state.value, move.run_id), service=move.service)

    def emit(self, kind: EventKind, run: PlanRun, reason: str, payload: object, service: str | None = None) -> None:
        self._emit(Event(kind, self.clock(), service, None, reason, payload))  # type: ignore[arg-type]

    def run_ended(self, run_id: int) -> None:
        """A run's end was announced (RUN_FINISHED on the bus): wake whoever waits for it."""
        ended = self._ended.get(run_id)
        if ended is not None:
            ended.set()

    # -- a plan run ----------------------------------------------------------------------------------
    async def execute(self, live: Live) -> None:
        """Run the groups from the first with something left to do; journal the end. Cancelled (the daemon
        stops): the run is journaled `interrupted`, moves in progress stay `moving` for resume to settle."""
        try:
            for number, group in enumerate(live.run.groups, start=1):
                if live.stopping:
                    break
                if all(live.run.move(name).state in FINISHED_MOVES for name in group):  # type: ignore[union-attr]
                    continue
                if not await self._gate(live, number - 1):  # after group 0: `require_approval`
                    break
                self.emit(EventKind.PLAN_GROUP_STARTED, live.run, f"plan run {live.run.id}: group {number}",
                          PlanGroupStarted(live.run.plan, live.run.id, number, tuple(group)))
                await self._group(live, group)
                self.write_moves(live)  # the group's moves announced before what follows it (a gate, the end)
            self._finish(live)
        except asyncio.CancelledError:
            run = replace(live.run, state=PlanState.INTERRUPTED,
                          detail=f"the daemon stopped during this plan run: bcd plan resume {live.run.id}")
            self.journal.save(run)
            live.run = run
            raise

    async def _gate(self, live: Live, after: int) -> bool:
        gate = next((g for g in live.run.gates if g.after_group == after), None)
        if gate is None or gate.state == "approved":
            return True
        run = live.run
        live.gate = asyncio.get_running_loop().create_future()
        self.save(live, replace(run.with_gate(replace(gate, state="waiting", at=self.clock())),
                                state=PlanState.WAITING_GATE))
        self.emit(EventKind.PLAN_GATE_WAITING, live.run, f"plan run {run.id} waits for approval before group "
                  f"{after + 1}" + (f": {gate.why}" if gate.why else ""),
                  PlanGateWaiting(run.plan, run.id, after, gate.timeout))
        try:
            async with asyncio.timeout(gate.timeout):
                by = await live.gate
        except TimeoutError:
            self.save(live, replace(live.run.with_gate(replace(gate, state="timed_out", at=self.clock())),
                                    state=PlanState.RUNNING))
            live.stopping = f"the gate after group {after} was not approved within {gate.timeout:g}s"
            return False
        finally:
            live.gate = None
        if live.stopping:  # aborted while waiting
            return False
        reached = next((g for g in live.run.gates if g.after_group == after), gate)
        self.save(live, replace(live.run.with_gate(replace(reached, state="approved", by=by, at=self.clock())),
                                state=PlanState.RUNNING))
        return True

    async def _group(self, live: Live, group: list[str]) -> None:
        slots = asyncio.Semaphore(live.config.parallel)
        async with asyncio.TaskGroup() as tasks:
            for name in group:
                move = live.run.move(name)
                assert move is not None
                if move.state in FINISHED_MOVES:
                    continue
                failed = self._failed_dependency(live, name)
                if failed:
                    self.set_move(live, replace(move, state=MoveState.SKIPPED, reason=failed))
                elif move.state is MoveState.MANUAL:
                    tasks.create_task(self._manual(live, move))
                elif move.state is MoveState.PENDING:
                    tasks.create_task(self._move(live, move, slots))

    def _failed_dependency(self, live: Live, name: str) -> str:
        if live.needs is None:
            grouped = [move.service for move in live.run.moves if move.group > 0]
            graph = {service: config.depends_on for service, config in self.estate.config.services.items()}
            live.needs = dependencies.within(graph, grouped)
        for need in live.needs.get(name, []):
            move = live.run.move(need)
            if move is not None and move.state in FAILED_DEPENDENCY:
                return f"dependency {need} {move.state}" + (f" ({move.reason})" if move.reason else "")
        return ""

    async def _manual(self, live: Live, move: Move) -> None:
        done = live.manual.setdefault(move.service, asyncio.get_running_loop().create_future())
        self.set_move(live, move)  # announced: the plan waits for an operator
        try:
            by = await done
        finally:
            live.manual.pop(move.service, None)
        if by:  # "" : the plan was aborted
            self.set_move(live, replace(move, state=MoveState.DONE, reason=f"marked done by {by}",
                                        ended=self.clock()))

    async def _move(self, live: Live, move: Move, slots: asyncio.Semaphore) -> None:
        async with slots:
            if self.shared is not None and not self.shared.holds(live.run.plan):
                self.lose(live)
            if live.stopping:
                return
            run = live.run
            now = self.clock()
            self.set_move(live, replace(move, state=MoveState.MOVING, started=now, reason=""))
            await self.journaled(live)  # journaled before its run is asked for: never started twice
            if not await self.flush(live):  # every instance must see `moving` before the move can start
                self.set_move(live, replace(live.run.move(move.service) or move, state=MoveState.PENDING,
                                            started=None, reason="not started: " + LOST_LOCK))
                return
            outcome = await self.operations.perform(Transfer(
                move.service, RunKind.FAILOVER, run.by, f"plan {run.plan} run {run.id}: {run.reason}",
                to=run.to_site, force=run.forced, plan=PlanRef(run.plan, run.id), drill=live.drill))
            if not isinstance(outcome, Accepted) or outcome.run is None:
                reason = getattr(outcome, "reason", "not started")
                self._failed(live, replace(live.run.move(move.service) or move, state=MoveState.FAILED,
                                           reason=f"not started: {reason}", ended=self.clock()))
                return
            run_id = outcome.run.id
            name = f"{self.shared.vantage}:{run_id}" if self.shared is not None else None
            self.set_move(live, replace(live.run.move(move.service) or move, run_id=run_id, run_name=name))
            result, detail = await self._wait_run(run_id)
            current = live.run.move(move.service) or move
            if result is RunResult.SUCCEEDED:
                self.set_move(live, replace(current, state=MoveState.MOVED, reason=f"run {run_id} succeeded",
                                            ended=self.clock()))
            else:
                self._failed(live, replace(current, state=MoveState.FAILED, reason=f"run {run_id} {result}: {detail}",
                                           ended=self.clock()))

    def _failed(self, live: Live, move: Move) -> None:
        self.set_move(live, move)
        if live.config.on_service_failure == "stop" and not live.stopping:
            live.stopping = f"{move.service} failed and the plan stops on failure"

    async def _wait_run(self, run_id: int) -> tuple[RunResult, str]:
        """The run's result once it has ended: woken by the runner as soon as the run's end is journaled (or,
        for a run not in progress here, by its announced end), checking the journal at least every second (an
        announcement a full bus queue dropped, or an end the journal could not take yet, is not waited for
        forever)."""
        ended = self._ended.setdefault(run_id, asyncio.Event())
        end = self.operations.run_end(run_id)
        try:
            while True:
                record = self.estate.run(run_id)
                if record is not None and record.ended is not None and record.result not in (
                        RunResult.RUNNING, RunResult.WAITING_APPROVAL):
                    return record.result, record.detail
                ended.clear()
                if end is not None and not end.done():
                    await asyncio.wait({end}, timeout=1.0)
                    continue
                try:
                    async with asyncio.timeout(1.0):
                        await ended.wait()
                except TimeoutError:
                    pass
        finally:
            self._ended.pop(run_id, None)

    def _finish(self, live: Live) -> None:
        self.write_moves(live)
        run = live.run
        states = [move.state for move in run.moves if move.group > 0]
        if live.lost:  # journaled here only: the run is another instance's to resume (or this one's, later)
            self.save(live, replace(run, state=PlanState.INTERRUPTED, detail=LOST_LOCK))
            log.warning("plan_run_interrupted", plan=run.plan, plan_run=run.id, reason=LOST_LOCK)
            return
        if live.aborted_by is not None:
            state, detail = PlanState.ABORTED, live.stopping
        elif live.stopping or any(s in (MoveState.FAILED, MoveState.BLOCKED) for s in states):
            state = PlanState.FAILED
            failed = [m.service for m in run.moves if m.state in (MoveState.FAILED, MoveState.BLOCKED)]
            detail = live.stopping or f"failed: {', '.join(failed)}"
        else:
            state, detail = PlanState.SUCCEEDED, f"{sum(s is MoveState.MOVED for s in states)} moved"
        self.save(live, replace(run, state=state, ended=self.clock(), detail=detail))
        log.info("plan_finished", plan=run.plan, plan_run=run.id, result=str(state), detail=detail)
        self.emit(EventKind.PLAN_FINISHED, live.run, f"plan run {run.id} {state}: {detail}",
                  PlanFinished(run.plan, run.id, state.value))
