"""Drilling a recovery plan: the plan run as a drill (every move a leg of the drill: no cooldown for real
failovers, recoveries of kind `drill`), a hold, then each service it moved moved back to where it was, dependents
first (the reverse of the plan's dependency groups), one at a time.

Before the start every service the plan would move must pass the drill preconditions (`bcd.drills.checks`: both
sites up, no maintenance, no run in progress, …), and its move back must be one the policy would allow now (a
real failback's cooldown refuses the drill: `Legs.back_refusal`). If the plan run does not succeed, or a site of
a moved service leaves `up` during the hold, nothing more moves and the drill moves back what moved, and says why.
Journaled as `drill_started` and `drill_finished` with `drill_kind: plan` (no service: a plan spans several).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from bcd import dependencies
from bcd.drills.checks import Facts, degraded, refusal
from bcd.drills.legs import Legs
from bcd.events import DrillFinished, DrillStarted, Emit, Event, EventKind
from bcd.operations import Accepted, DrillPlan, Outcome, PlanControl, Refusal, Refused, RunPlan
from bcd.plans.model import MoveState, PlanRun, PlanState
from bcd.plans.planner import graph_of
from bcd.view import EstateView

log = structlog.get_logger("bcd.drills")
KIND = "plan"


@dataclass
class PlanLive:
    """A plan drill under way in this process."""

    id: str
    intent: DrillPlan
    from_site: str
    to_site: str
    started: float
    plan_run: int
    runs: list[int] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str | None:
        """The scheduled drill's name (`drills:`), None for one asked for."""
        return None if self.intent.scheduled is None else self.intent.scheduled[0]

    def json(self) -> dict[str, Any]:
        intent = self.intent
        return {"id": self.id, "plan": intent.plan, "kind": KIND, "hold": intent.hold, "from": self.from_site,
                "to": self.to_site, "by": intent.by, "reason": intent.reason, "name": self.name,
                "started": self.started,
                "plan_run": self.plan_run, "runs": list(self.runs)}


class PlanDrills:
    """Starts, watches and ends plan drills; `facts` is the service drills' (bcd.drills.runner)."""

    def __init__(self, estate: EstateView, emit: Emit, *, clock: Callable[[], float], poll: float,
                 facts: Callable[[str, str, float], Facts], legs: Legs) -> None:
        self._estate = estate
        self._emit = emit
        self._clock = clock
        self._poll = poll
        self._facts = facts
        self._legs = legs
        self.live: dict[str, PlanLive] = {}  # plan -> its drill under way

    def moving(self, plan: str) -> list[str]:
        """The services plan `plan` would move now: those it covers that are active on its `from` site."""
        config = self._estate.config
        spec = config.plans[plan]
        return [name for name in spec.candidates(config.services)
                if self._estate.services[name].active == spec.from_site]

    def refusal(self, plan: str, now: float) -> str | None:
        """Why plan `plan` may not be drilled now (the first service that fails a precondition), or None."""
        if plan in self.live:
            return f"drill {self.live[plan].id} of plan {plan} is under way"
        moment = datetime.fromtimestamp(now, UTC)
        blackout = next((f"{name}: {hit}" for name, drill in self._estate.config.drills.items()
                         if drill.plan == plan and (hit := drill.in_blackout(moment)) is not None), None)
        if blackout is not None:
            return f"plan {plan} is in a drill blackout ({blackout})"
        services = self.moving(plan)
        if not services:
            return f"nothing to move: no service of plan {plan} is active on its from site"
        spec = self._estate.config.plans[plan]
        for name in services:  # the plan moves them; each moves back on its own: that move must be allowed too
            why = refusal(self._facts(name, "round_trip", now))
            if why is None and (back := self._legs.back_refusal(name, spec.from_site, spec.to_site, plan)):
                why = f"{name}: {back}"
            if why is not None:
                return why
        return None

    async def perform(self, intent: DrillPlan, plans: PlanControl) -> Outcome:
        """Check the preconditions and start the plan run as the drill's: Accepted (the drill goes on in the
        background) or Refused with the reason."""
        config = self._estate.config.plans.get(intent.plan)
        if config is None:
            return Refused(Refusal.NOT_FOUND, f"no plan named {intent.plan!r}")
        now = self._clock()
        why = self.refusal(intent.plan, now)
        if why is not None:
            return Refused(Refusal.CONFLICT, f"drill refused: {why}")
        drill_id = f"plan:{intent.plan}@{datetime.fromtimestamp(now, UTC).strftime('%Y%m%dT%H%M%SZ')}"
        outcome = await plans.perform(RunPlan(intent.plan, intent.by, f"drill {drill_id}: {intent.reason}",
                                              drill=drill_id))
        if isinstance(outcome, Refused):
            return Refused(outcome.kind, f"drill refused: {outcome.reason}", outcome.guard)
        assert outcome.plan_run is not None
        live = PlanLive(drill_id, intent, config.from_site, config.to_site, now, outcome.plan_run.id)
        self.live[intent.plan] = live
        name, occurrence = intent.scheduled or (None, None)
        self._emit(Event(EventKind.DRILL_STARTED, now, None, config.to_site,
                         f"drill {drill_id} of plan {intent.plan} by {intent.by}: {intent.reason}",
                         DrillStarted(drill_id, KIND, intent.hold, intent.by, config.from_site, config.to_site,
                                      name, occurrence, intent.plan)),
                   drill=drill_id, plan=intent.plan, plan_run=live.plan_run, hold=intent.hold)
        live.task = asyncio.get_running_loop().create_task(self._guarded(live), name=f"drill-{drill_id}")
        return Accepted(f"drill {drill_id}: plan run {live.plan_run} moves plan {intent.plan}'s services to "
                        f"{config.to_site}, holds {intent.hold:g}s, then moves them back", drill=live.json())

    async def stop(self) -> None:
        tasks = [live.task for live in self.live.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _guarded(self, live: PlanLive) -> None:
        try:
            await self._carry_out(live)
        except asyncio.CancelledError:
            self._finish(live, "interrupted", "the daemon stopped during the drill: check where the plan's "
                                              "services are active (bcd status)")
            raise
        except Exception as exc:  # the one catch-all of a drill's task: it must end, journaled
            log.exception("drill_error", drill=live.id)
            self._finish(live, "failed", f"internal error: {exc}")

    async def _carry_out(self, live: PlanLive) -> None:
        run = await self._plan_ended(live.plan_run)
        moved = [move.service for move in run.moves if move.state is MoveState.MOVED]
        live.runs.extend(move.run_id for move in run.moves if move.run_id is not None)
        why = None if run.state is PlanState.SUCCEEDED else f"plan run {run.id} {run.state}: {run.detail}"
        if why is None:
            why = await self._hold(live, moved)
        back, failures = await self._return(live, moved)
        tail = f"{len(back)} service(s) back on {live.from_site}" + (
            f"; NOT back: {'; '.join(failures)}" if failures else "")
        if why is not None:
            self._finish(live, "aborted" if run.state is PlanState.SUCCEEDED else "failed", f"{why}; {tail}")
        elif failures:
            self._finish(live, "failed", tail)
        else:
            self._finish(live, "succeeded", f"{len(moved)} service(s) served from {live.to_site} for "
                                            f"{live.intent.hold:g}s; {tail}")

    async def _plan_ended(self, plan_run: int) -> PlanRun:
        while True:
            run = self._estate.plan_run(plan_run)
            if run is not None and run.ended is not None:
                return run
            await asyncio.sleep(self._poll)

    async def _hold(self, live: PlanLive, moved: list[str]) -> str | None:
        """Stay on the `to` site for the hold, watching the moved services' sites: why it ended early, or None."""
        end = self._clock() + live.intent.hold
        while True:
            for service in moved:
                sites = {site: self._estate.sites[(service, site)]
                         for site in self._estate.config.services[service].sites}
                why = degraded(sites, live.from_site, live.to_site)
                if why is not None:
                    return f"{service}: {why}"
            if self._clock() >= end:
                return None
            await asyncio.sleep(min(self._poll, max(0.0, end - self._clock())))

    async def _return(self, live: PlanLive, moved: list[str]) -> tuple[list[str], list[str]]:
        """Move each of `moved` back to `from`, dependents first: (the services back, why each other is not)."""
        graph = graph_of(self._estate.config.services)
        back: list[str] = []
        failures: list[str] = []
        for group in reversed(dependencies.groups(graph, moved)):
            for service in group:
                done, how = await self._legs.move_back(service, live.from_site, live.intent.by, live.id, live.runs)
                (back.append(service) if done else failures.append(f"{service}: {how}"))
        return back, failures

    def _finish(self, live: PlanLive, result: str, reason: str) -> None:
        self.live.pop(live.intent.plan, None)
        self._emit(Event(EventKind.DRILL_FINISHED, self._clock(), None, None,
                         f"drill {live.id} of plan {live.intent.plan} {result}: {reason}",
                         DrillFinished(live.id, KIND, result, tuple(live.runs), live.name, live.intent.plan)),
                   warn=result != "succeeded", drill=live.id, plan=live.intent.plan, result=result, reason=reason,
                   runs=live.runs)
