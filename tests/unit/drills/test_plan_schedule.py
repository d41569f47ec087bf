"""Scheduled plan drills (`drills: {x: {plan: …}}`) against a real engine, runner, plan runner and journal with
a fixed clock: an occurrence on the day the clock springs forward drills the plan once, at the calendar's instant,
also after a restart, and the journal's counts and last success (what /metrics shows) name the plan; an occurrence
in the plan drill's blackout is skipped with the reason, and a plan drill asked for by hand then is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import parse
from bcd.drills.records import DrillJournal
from bcd.drills.runner import Drills
from bcd.events import DrillStarted, Event, EventKind
from bcd.journal import Journal
from bcd.model import Result
from bcd.operations import DrillPlan, Operations, Refused
from bcd.plans.runner import PlanRunner
from bcd.view import EngineView
from tests.helpers.runner_kit import acting
from tests.unit.drills.test_schedule import BLACKED_OUT, CONFIG, NEXT, SPRING, Clock, Estate, wait_for

PLAN_CONFIG = CONFIG.replace("  sunday: {{service: payroll,", "  sunday: {{plan: evacuate,") + (
    "plans:\n  evacuate: {{from: dorset, to: hampshire}}\n")


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    clock = Clock()
    engine, runner = acting(parse(PLAN_CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(),
                            clock=clock)
    view = EngineView(engine)
    plans = PlanRunner(engine.journal, Operations(engine), view, engine.emit)
    made = Estate(clock, engine, Operations(engine), [], asyncio.Event())
    drills = Drills(made.operations, view, made.emit, clock=clock, poll=0.01)
    made.operations = Operations(engine, plans=plans, drills=drills)  # the daemon's: drills through operations
    made.observe(Result.OK)
    plans.start()
    yield made
    await drills.stop()
    await plans.stop()
    await runner.stop()
    engine.journal.close()


async def test_a_scheduled_plan_drill_starts_once_on_the_spring_forward_day_also_after_a_restart(
        estate: Estate) -> None:
    assert estate.engine.config.drills["sunday"].plan == "evacuate"
    schedule = estate.schedule()
    estate.now = SPRING - 10
    assert await schedule.start_due(estate.now) == 10.0
    estate.now = SPRING
    await schedule.start_due(estate.now)
    started = estate.kinds(EventKind.DRILL_STARTED)
    assert [(e.service, e.data.drill_kind, e.data.plan, e.data.name, e.data.occurrence)  # type: ignore[union-attr]
            for e in started] == [(None, "plan", "evacuate", "sunday", SPRING)]
    finished = await wait_for(estate, EventKind.DRILL_FINISHED)
    assert (finished.data.result, finished.data.plan) == ("succeeded", "evacuate"), finished.reason  # type: ignore[union-attr]
    assert estate.engine.services["payroll"].active == "dorset"
    estate.now = SPRING + 30
    assert await estate.schedule().start_due(estate.now) == 60.0  # a restart: the occurrence is in the journal
    assert len(estate.kinds(EventKind.DRILL_STARTED)) == 1
    assert estate.schedule().next_occurrence("sunday", estate.engine.config.drills["sunday"], estate.now) == NEXT
    records = DrillJournal(estate.engine.journal)
    assert records.plan_results() == {("evacuate", "succeeded"): 1}
    assert records.plan_successes() == {"evacuate": finished.at}
    assert records.results() == {} and records.last_successes() == {}  # a plan drill is no service's


async def test_a_plan_drill_in_its_blackout_is_skipped_and_refused_by_hand(estate: Estate) -> None:
    estate.now = BLACKED_OUT
    await estate.schedule().start_due(estate.now)
    skipped = estate.kinds(EventKind.DRILL_SKIPPED)
    assert [(e.data.name, e.data.drill_kind) for e in skipped] == [("sunday", "plan")]  # type: ignore[union-attr]
    assert "skipped: in its blackout 2027-04-10..2027-04-12" in skipped[0].reason
    by_hand = await estate.operations.perform(DrillPlan("evacuate", "olive", "x"))
    assert isinstance(by_hand, Refused), by_hand
    assert by_hand.reason == "drill refused: plan evacuate is in a drill blackout (sunday: 2027-04-10..2027-04-12)"
    assert estate.kinds(EventKind.DRILL_STARTED) == []


async def test_a_plan_drill_ended_interrupted_at_a_restart_is_counted_for_its_plan(estate: Estate) -> None:
    estate.emit(Event(EventKind.DRILL_STARTED, estate.now, None, "hampshire", "drill plan:evacuate@1 of plan evacuate",
                      DrillStarted("plan:evacuate@1", "plan", 0.0, "olive", "dorset", "hampshire", plan="evacuate")))
    estate.engine.writer.flush()
    records = DrillJournal(estate.engine.journal)
    Drills(estate.operations, EngineView(estate.engine), estate.emit, clock=estate.clock).recover(records)
    estate.engine.writer.flush()
    assert records.plan_results() == {("evacuate", "interrupted"): 1}  # the plan read from the drill's start
    assert records.plan_successes() == {}
