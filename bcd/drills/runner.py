"""Carrying out DR drills through `bcd.operations`, like any other caller: a round trip is a real failover to a
standby (the service's own failover runbook, the same runner, lock and guards), a hold while both sites are
watched, and a real move back to the site it started on, each leg a run marked with the drill's id (its
evidence's `drill`: a recovery of kind `drill`, trigger `drill`, no cooldown for real failovers).

A drill is refused before it starts when a precondition fails (`bcd.drills.checks`), or when the policy would
refuse either leg of a round trip (a cooldown either way, data lag, …: `Legs.refusal`). While it holds on the
standby, the standby or the site it returns to leaving `up` aborts it: it moves back at once (unless a real
failover already did), and says why. A move back refused or failed leaves it `failed` (or `aborted`), its reason
naming where the service was left and the command that restores it (logged `drill_not_restored`). Its start and
end are journaled (`drill_started`, `drill_finished` with the result, its runs and the reason) and logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from bcd.config.drills import unfit
from bcd.drills.checks import Facts, degraded, refusal, unwell
from bcd.drills.legs import ENDED, Legs
from bcd.drills.plan import PlanDrills
from bcd.drills.records import DrillJournal
from bcd.drills.restart import STOPPED, cleaned, cleanup_run, runs_of, where_left
from bcd.events import DrillFinished, DrillStarted, Emit, Event, EventKind
from bcd.journal.run_records import RunRecord
from bcd.model import RunKind, RunResult
from bcd.operations import (
    Abort,
    Accepted,
    Drill,
    DrillPlan,
    Operations,
    Outcome,
    PlanControl,
    Refusal,
    Refused,
    Transfer,
)
from bcd.view import EstateView

log = structlog.get_logger("bcd.drills")
POLL = 0.2  # seconds between looks at a leg's run and the sites' health (cheap: reads of the view)


@dataclass
class Live:
    """A drill under way in this process."""

    id: str
    intent: Drill
    origin: str
    target: str
    started: float
    runs: list[int] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def json(self) -> dict[str, Any]:
        intent = self.intent
        return {"id": self.id, "service": intent.service, "kind": intent.kind, "hold": intent.hold,
                "from": self.origin, "to": self.target, "by": intent.by, "reason": intent.reason,
                "name": intent.name, "started": self.started, "runs": list(self.runs)}


class Drills:
    """Starts, watches and ends drills."""

    def __init__(self, operations: Operations, estate: EstateView, emit: Emit,
                 clock: Callable[[], float] = time.time, poll: float = POLL) -> None:
        self._operations = operations
        self._estate = estate
        self._emit = emit
        self._clock = clock
        self._poll = poll
        self.live: dict[str, Live] = {}  # service -> its drill under way
        self.legs = Legs(operations, estate, poll)
        self.plans = PlanDrills(estate, emit, clock=clock, poll=poll, facts=self.facts, legs=self.legs)

    def facts(self, service: str, kind: str, now: float) -> Facts:
        """What the preconditions look at, read from the estate now."""
        estate = self._estate
        config = estate.config
        spec = config.services[service]
        run = estate.run_in_progress(service)
        unacked = estate.unacknowledged_run(service)
        blackout = next((f"{name}: {hit}" for name, drill in config.drills.items() if drill.service == service
                         and (hit := drill.in_blackout(datetime.fromtimestamp(now, UTC))) is not None), None)
        view = estate.services[service]
        return Facts(
            service, kind, view.status, view.active, {site: estate.sites[(service, site)] for site in spec.sites},
            unfit=unfit(spec, kind),
            drilling=self.live[service].id if service in self.live else None,
            running=None if run is None else run.id, unacknowledged=None if unacked is None else unacked.id,
            blackout=blackout)

    async def perform(self, intent: Drill) -> Outcome:
        """Check the preconditions and start the drill's first leg: Accepted (the drill goes on in the
        background) or Refused (CONFLICT) with the reason."""
        now = self._clock()
        origin = self._estate.services[intent.service].active
        target = origin if intent.kind == "runbook" else next(  # none: unfit refuses it (no standby)
            (site for site in self._estate.config.services[intent.service].sites if site != origin), origin)
        drill_id = f"{intent.service}@{datetime.fromtimestamp(now, UTC).strftime('%Y%m%dT%H%M%SZ')}"
        why = refusal(self.facts(intent.service, intent.kind, now))
        if why is None and intent.kind == "round_trip":  # both legs, before the first: it must be able to end
            why = self.legs.refusal(intent.service, origin, target, drill_id)
        if why is not None:
            return Refused(Refusal.CONFLICT, f"drill refused: {why}")
        if intent.kind == "runbook":  # its drill runbook on the active site, then that runbook's cleanup
            outcome = self._operations.drill_run(intent.service, intent.by, f"drill {drill_id}: {intent.reason}",
                                                 drill_id)
        else:
            outcome = await self._operations.perform(Transfer(
                intent.service, RunKind.FAILOVER, intent.by, f"drill {drill_id}: {intent.reason}", to=target,
                drill=drill_id))
        if isinstance(outcome, Refused):
            return Refused(outcome.kind, f"drill refused: {outcome.reason}", outcome.guard)
        assert outcome.run is not None
        live = Live(drill_id, intent, origin, target, now, [outcome.run.id])
        self.live[intent.service] = live
        self._emit(Event(EventKind.DRILL_STARTED, now, intent.service, target,
                         f"drill {drill_id} by {intent.by}: {intent.reason}",
                         DrillStarted(drill_id, intent.kind, intent.hold, intent.by, origin, target, intent.name,
                                      intent.occurrence)),
                   drill=drill_id, to_site=target, hold=intent.hold, run_id=outcome.run.id)
        work = self._runbook(live) if intent.kind == "runbook" else self._round_trip(live)
        live.task = asyncio.get_running_loop().create_task(work, name=f"drill-{drill_id}")
        what = (f"runs the drill runbook of {intent.service} on {origin}, then its cleanup" if intent.kind == "runbook"
                else f"moves {intent.service} to {target}, holds {intent.hold:g}s, then back to {origin}")
        return Accepted(f"drill {drill_id}: run {outcome.run.id} {what}", run=outcome.run, drill=live.json())

    async def perform_plan(self, intent: DrillPlan, plans: PlanControl) -> Outcome:
        """Drill a recovery plan (bcd.drills.plan), running it through `plans`."""
        return await self.plans.perform(intent, plans)

    def recover(self, records: DrillJournal) -> None:
        """End, as `interrupted`, each drill the journal holds started but not ended (the daemon was killed during
        it; the runner has marked its runs interrupted), saying where its service was left; a runbook drill's
        cleanup steps run first, once (bcd.drills.restart)."""
        for service, started, data in records.unfinished() + records.unannounced():
            drill_id, kind = str(data.get("drill")), str(data.get("drill_kind", "round_trip"))
            if service not in self._estate.config.services:  # a plan drill (bcd.drills.plan), or a service removed
                reason = f"drill {drill_id} interrupted: the daemon stopped during it (check bcd status)"
                self._emit(Event(EventKind.DRILL_FINISHED, self._clock(), service, None, reason,
                                 DrillFinished(drill_id, kind, "interrupted", (), data.get("name"))))
                log.warning("drill_interrupted", drill=drill_id, service=service)
                continue
            runs = runs_of(self._estate.recent_runs(service), drill_id)
            live = Live(drill_id, Drill(service, str(data.get("by")), started, kind, float(data.get("hold") or 0.0),
                                        data.get("name")), str(data.get("from")), str(data.get("to")),
                        self._clock(), [run.id for run in runs])
            if kind == "runbook":
                self._clean_up(live, cleanup_run(runs))
            else:
                self._finish(live, "interrupted", self._left(live))

    def _left(self, live: Live) -> str:
        """Why a round trip ended `interrupted`: where the daemon stopping left its service."""
        service, estate = live.intent.service, self._estate
        runs = runs_of(estate.recent_runs(service), live.id)
        return f"{STOPPED}; " + where_left(service, live.origin, estate.services[service].active,
                                           estate.config.services[service].active, runs)

    def _clean_up(self, live: Live, earlier: RunRecord | None) -> None:
        """Run the cleanup steps of runbook drill `live`, unless an earlier restart did; it ends when they do."""
        if earlier is not None:
            self._finish(live, "interrupted", f"{STOPPED}; {cleaned(earlier, earlier=True)}")
            return
        service = live.intent.service
        again = any(step.phase == "cleanup" for run in live.runs for step in self._estate.run_steps(run))
        outcome = self._operations.drill_run(service, "bcd", f"drill {live.id}: its cleanup after a restart "
                                             f"({STOPPED})", live.id, cleanup=True)
        if isinstance(outcome, Refused):
            self._finish(live, "interrupted", f"{STOPPED}; its cleanup did not run ({outcome.reason}): "
                                              "run the cleanup steps by hand")
            return
        assert outcome.run is not None
        live.runs.append(outcome.run.id)
        self.live[service] = live
        log.warning("drill_cleanup_after_restart", drill=live.id, service=service, run_id=outcome.run.id)
        live.task = asyncio.get_running_loop().create_task(
            self._guarded(live, self._cleaned(live, outcome.run.id, again)), name=f"drill-{live.id}-cleanup")

    async def _cleaned(self, live: Live, run_id: int, again: bool) -> None:
        await self.legs.wait_run(run_id)
        record = self._estate.run(run_id)
        assert record is not None
        self._finish(live, "interrupted", f"{STOPPED}; {cleaned(record, again=again)}")

    async def stop(self) -> None:
        """Stop watching: round trips under way end `interrupted`, runbook drills are left to the next start (which
        runs their cleanup); their runs are the runner's."""
        tasks = [live.task for live in self.live.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.plans.stop()

    # -- a runbook drill ------------------------------------------------------------------------------
    async def _runbook(self, live: Live) -> None:
        """Watch the drill runbook's run (steps, then cleanup, one run): a site leaving `up` aborts it (the runner
        still runs the cleanup); the drill succeeds only when the run does, cleanup included."""
        await self._guarded(live, self._watch_runbook(live))

    async def _watch_runbook(self, live: Live) -> None:
        run_id, service, why = live.runs[0], live.intent.service, None
        while (record := self._estate.run(run_id)) is None or record.ended is None or record.result not in ENDED:
            if why is None and (why := unwell(self._sites(service))) is not None:
                outcome = await self._operations.perform(Abort(run_id, "drill", service, why))
                log.warning("drill_aborting", drill=live.id, reason=why, outcome=getattr(outcome, "reason", "ok"))
            await asyncio.sleep(self._poll)
        cleanup = "; cleanup completed" in record.detail
        if why is not None:
            self._finish(live, "aborted", f"{why}; run {run_id} {record.result}: {record.detail}")
        elif record.result is RunResult.SUCCEEDED:
            self._finish(live, "succeeded", f"the drill runbook and its cleanup succeeded (run {run_id})"
                         if cleanup else f"the drill runbook succeeded (run {run_id})")
        else:
            self._finish(live, "failed", f"run {run_id} {record.result}: {record.detail}")

    # -- a round trip ---------------------------------------------------------------------------------
    async def _round_trip(self, live: Live) -> None:
        await self._guarded(live, self._legs(live))

    async def _guarded(self, live: Live, work: Coroutine[Any, Any, None]) -> None:
        """Await the drill's `work`: whatever happens it ends journaled (interrupted on shutdown)."""
        try:
            await work
        except asyncio.CancelledError:  # the daemon stops
            if live.intent.kind == "runbook":  # left unended: the next start runs its cleanup (bcd.drills.restart)
                log.warning("drill_left_to_restart", drill=live.id, service=live.intent.service,
                            hint="the next start runs its cleanup steps")
            else:
                self._finish(live, "interrupted", self._left(live))
            raise
        except Exception as exc:  # the one catch-all of a drill's task: it must end, journaled
            log.exception("drill_error", drill=live.id)
            self._finish(live, "failed", f"internal error: {exc}")

    async def _legs(self, live: Live) -> None:
        result, detail = await self._wait_run(live.runs[0])
        if result is not RunResult.SUCCEEDED:
            self._finish(live, "failed", f"the move to {live.target} (run {live.runs[0]}) {result}: {detail}")
            return
        aborted = await self._hold(live)
        back, how = await self._return(live)
        if not back:  # BcdDrillFailed pages (warning); this line says, on its own, what to do
            log.error("drill_not_restored", drill=live.id, service=live.intent.service, origin=live.origin, reason=how)
        if aborted is not None:
            tail = f"; back on {live.origin} ({how})" if back else f"; NOT back on {live.origin}: {how}"
            self._finish(live, "aborted", f"{aborted}{tail}")
        elif back:
            self._finish(live, "succeeded", f"{live.target} served for {live.intent.hold:g}s; back on "
                                            f"{live.origin} ({how})")
        else:
            self._finish(live, "failed", f"not back on {live.origin}: {how}")

    async def _hold(self, live: Live) -> str | None:
        """Stay on the target for the hold, watching both sites: why the hold ended early, or None."""
        end = self._clock() + live.intent.hold
        while True:
            why = degraded(self._sites(live.intent.service), live.origin, live.target)
            if why is None and self._estate.services[live.intent.service].active != live.target:
                why = f"{live.intent.service} is no longer active on {live.target}"
            if why is not None or self._clock() >= end:
                return why
            await asyncio.sleep(min(self._poll, max(0.0, end - self._clock())))

    async def _return(self, live: Live) -> tuple[bool, str]:
        """Move the service back to its origin (unless a real run already did): (back, how or why not)."""
        return await self.legs.move_back(live.intent.service, live.origin, live.intent.by, live.id, live.runs)

    async def _wait_run(self, run_id: int) -> tuple[RunResult, str]:
        return await self.legs.wait_run(run_id)

    def _sites(self, service: str) -> dict[str, Any]:
        return {site: self._estate.sites[(service, site)] for site in self._estate.config.services[service].sites}

    def _finish(self, live: Live, result: str, reason: str) -> None:
        service, kind = live.intent.service, live.intent.kind
        self.live.pop(service, None)
        now = self._clock()
        self._emit(Event(EventKind.DRILL_FINISHED, now, service, None, f"drill {live.id} {result}: {reason}",
                         DrillFinished(live.id, kind, result, tuple(live.runs), live.intent.name)),
                   warn=result != "succeeded", drill=live.id, result=result, reason=reason, runs=live.runs)
