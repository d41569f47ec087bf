"""Scheduled drills (bcd.drills.schedule) against a real engine, runner and journal with a fixed clock: an
occurrence on the day the clock springs forward starts once, at the instant the calendar's rule gives, also
after a restart; an occurrence in a blackout, or refused by a precondition, is skipped and journaled with the
reason; the drill itself goes to the standby and back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bcd import drills
from bcd.bus import Bus
from bcd.config import parse
from bcd.drills.records import DrillJournal
from bcd.drills.runner import Drills
from bcd.drills.schedule import DrillSchedule
from bcd.engine import Engine
from bcd.events import DrillFinished, DrillStarted, Event, EventKind
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.operations import Operations
from bcd.view import EngineView
from tests.helpers.runner_kit import acting

CONFIG = """
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s, rise: 1, fall: 1}}
runbooks:
  move: {{steps: [{{name: pause, sleep: {{duration: 1ms}}}}]}}
services:
  payroll:
    active: dorset
    failover: {{runbook: move, mode: manual, cooldown: 0s}}
    failback: {{runbook: move, mode: manual}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
drills:
  sunday: {{service: payroll, at: "every Sun 01:30", timezone: Europe/London,
            blackout: ["2027-04-10..2027-04-12"]}}
"""
# Sunday 28 March 2027: Europe/London springs forward at 01:00 GMT; 01:30 does not exist that day and happens at
# 02:30 BST, which is 01:30 UTC (the same instant as a week before, when 01:30 GMT was 01:30 UTC); a week later
# 01:30 BST is 00:30 UTC.
SPRING = datetime(2027, 3, 28, 1, 30, tzinfo=UTC).timestamp()
NEXT = datetime(2027, 4, 4, 0, 30, tzinfo=UTC).timestamp()
BLACKED_OUT = datetime(2027, 4, 11, 0, 30, tzinfo=UTC).timestamp()


class Clock:
    """The fixed clock every part reads (a test moves it)."""

    def __init__(self) -> None:
        self.now = SPRING - 3600

    def __call__(self) -> float:
        return self.now


@dataclass
class Estate:
    clock: Clock
    engine: Engine
    operations: Operations
    emitted: list[Event]
    changed: asyncio.Event

    def schedule(self) -> DrillSchedule:
        """A schedule as a daemon starting now would build it (from the journal)."""
        self.engine.writer.flush()
        return DrillSchedule(self.operations, EngineView(self.engine), self.emit, DrillJournal(self.engine.journal),
                             clock=self.clock)

    @property
    def now(self) -> float:
        return self.clock.now

    @now.setter
    def now(self, value: float) -> None:
        self.clock.now = value

    def emit(self, event: Event, **log_fields: object) -> None:
        self.emitted.append(event)
        self.changed.set()
        self.engine.emit(event, **log_fields)

    def observe(self, result: Result) -> None:
        for site in ("dorset", "hampshire"):
            self.engine.observe(Observation(ProbeKey("payroll", site, "health"), result, 0.01, str(result), self.now))

    def kinds(self, kind: EventKind) -> list[Event]:
        return [event for event in self.emitted if event.kind is kind]


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    clock = Clock()
    engine, runner = acting(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock=clock)
    made = Estate(clock, engine, Operations(engine), [], asyncio.Event())
    drills = Drills(made.operations, EngineView(engine), made.emit, clock=clock, poll=0.01)
    made.operations = made.operations.joined(drills=drills)  # the daemon's: drills started through operations
    made.observe(Result.OK)
    yield made
    await drills.stop()
    await runner.stop()
    engine.journal.close()


async def wait_for(estate: Estate, kind: EventKind) -> Event:
    async with asyncio.timeout(10):
        while not estate.kinds(kind):
            estate.changed.clear()
            await estate.changed.wait()
    return estate.kinds(kind)[0]


async def test_an_occurrence_on_the_spring_forward_day_starts_once_also_after_a_restart(estate: Estate) -> None:
    schedule = estate.schedule()
    assert await schedule.start_due(estate.now) == 60.0  # an hour ahead: woken again within LOOK_AHEAD
    estate.now = SPRING - 10
    assert await schedule.start_due(estate.now) == 10.0
    assert estate.kinds(EventKind.DRILL_STARTED) == []
    estate.now = SPRING
    await schedule.start_due(estate.now)
    started = estate.kinds(EventKind.DRILL_STARTED)
    assert [(e.data.name, e.data.occurrence, e.data.from_site, e.data.to_site) for e in started] == [  # type: ignore[union-attr]
        ("sunday", SPRING, "dorset", "hampshire")]
    finished = await wait_for(estate, EventKind.DRILL_FINISHED)
    assert finished.data.result == "succeeded", finished.reason  # type: ignore[union-attr]
    assert estate.engine.services["payroll"].active == "dorset"
    estate.now = SPRING + 30
    assert await estate.schedule().start_due(estate.now) == 60.0  # a restart: the occurrence is in the journal
    assert await schedule.start_due(estate.now) == 60.0
    assert len(estate.kinds(EventKind.DRILL_STARTED)) == 1
    assert estate.schedule().next_occurrence("sunday", estate.engine.config.drills["sunday"], estate.now) == NEXT


async def test_an_occurrence_in_a_blackout_or_refused_is_skipped_with_the_reason(estate: Estate) -> None:
    estate.now = BLACKED_OUT
    schedule = estate.schedule()
    await schedule.start_due(estate.now)
    skipped = estate.kinds(EventKind.DRILL_SKIPPED)
    assert [(e.data.name, e.data.occurrence) for e in skipped] == [("sunday", BLACKED_OUT)]  # type: ignore[union-attr]
    assert "skipped: in its blackout 2027-04-10..2027-04-12" in skipped[0].reason
    estate.now = BLACKED_OUT + 7 * 86400
    estate.observe(Result.FAIL)  # fall 1: both sites down now
    await schedule.start_due(estate.now)
    assert "skipped: drill refused: site dorset of payroll is down" in estate.kinds(EventKind.DRILL_SKIPPED)[1].reason
    assert estate.kinds(EventKind.DRILL_STARTED) == []


async def test_a_drill_left_unfinished_by_a_killed_daemon_ends_interrupted_at_the_next_start(estate: Estate) -> None:
    estate.emit(Event(EventKind.DRILL_STARTED, estate.now, "payroll", "hampshire", "drill payroll@1 by olive: x",
                      DrillStarted("payroll@1", "round_trip", 0.0, "olive", "dorset", "hampshire")))
    estate.emit(Event(EventKind.DRILL_STARTED, estate.now, "payroll", "hampshire", "drill payroll@2 by olive: x",
                      DrillStarted("payroll@2", "round_trip", 0.0, "olive", "dorset", "hampshire")))
    estate.emit(Event(EventKind.DRILL_FINISHED, estate.now, "payroll", None, "drill payroll@2 succeeded: x",
                      DrillFinished("payroll@2", "round_trip", "succeeded", (1, 2))))
    estate.engine.writer.flush()
    records = DrillJournal(estate.engine.journal)
    Drills(estate.operations, EngineView(estate.engine), estate.emit, clock=estate.clock).recover(records)
    ended = estate.kinds(EventKind.DRILL_FINISHED)[1:]
    assert [(e.data.drill, e.data.result) for e in ended] == [("payroll@1", "interrupted")]  # type: ignore[union-attr]
    estate.engine.writer.flush()
    assert records.unfinished() == []


async def test_the_daemons_drills_end_unfinished_ones_when_their_part_starts_not_when_made(estate: Estate) -> None:
    estate.emit(Event(EventKind.DRILL_STARTED, estate.now, "payroll", "hampshire", "drill payroll@1 by olive: x",
                      DrillStarted("payroll@1", "round_trip", 0.0, "olive", "dorset", "hampshire")))
    estate.engine.writer.flush()
    _, run = drills.make(estate.engine.journal, estate.operations, EngineView(estate.engine), estate.emit)
    assert estate.kinds(EventKind.DRILL_FINISHED) == []  # made (in the daemon's constructor): nothing emitted yet
    ready = asyncio.Event()
    part = asyncio.create_task(run(ready))
    await ready.wait()
    part.cancel()
    await asyncio.gather(part, return_exceptions=True)
    ended = estate.kinds(EventKind.DRILL_FINISHED)
    assert [(e.data.drill, e.data.result) for e in ended] == [("payroll@1", "interrupted")]  # type: ignore[union-attr]
