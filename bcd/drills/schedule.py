"""Scheduled drills (`drills:`): at each occurrence of a drill's calendar expression (`bcd.calendar`, in its time
zone: daylight-saving changes are the calendar's), the drill is started through `bcd.operations` by `drills`: a
service's drill (`Drill`), or a recovery plan's (`plan:`, `DrillPlan`).

An occurrence starts once: the journal keeps each occurrence started (`drill_started`) or skipped
(`drill_skipped`), and after a restart the schedule goes on after the last one it holds. An occurrence inside
one of the drill's blackouts, or refused by a precondition (`bcd.drills.checks`, the policy), is skipped with
the reason, journaled and logged. One missed while the daemon was down for longer than LATE is not started
late (a drill at an hour nobody expects is worse than none; the next occurrence comes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from bcd import calendar
from bcd.config.drills import DrillConfig
from bcd.drills.records import DrillJournal
from bcd.events import DrillSkipped, Emit, Event, EventKind
from bcd.operations import Drill, DrillPlan, Operations, Refused
from bcd.view import EstateView

log = structlog.get_logger("bcd.drills")
LOOK_AHEAD = 60.0  # seconds: the schedule wakes at least this often (a reload may have added a drill)
LATE = 300.0  # an occurrence this late (the daemon was down at its time) is not started any more
BY = "drills"


class DrillSchedule:
    def __init__(self, operations: Operations, estate: EstateView, emit: Emit,
                 records: DrillJournal, clock: Callable[[], float] = time.time) -> None:
        self._operations = operations
        self._estate = estate
        self._emit = emit
        self._records = records
        self._clock = clock
        self._after: dict[str, float] = {}  # drill name -> occurrences up to this time are done

    def next_occurrence(self, name: str, spec: DrillConfig, now: float) -> float | None:
        """The drill's first occurrence not yet started or skipped (blackouts included: they are skipped)."""
        after = self._after.get(name)
        if after is None:
            recorded = self._records.last_occurrence(name)
            after = self._after[name] = max(recorded if recorded is not None else 0.0, now - LATE)
        start = calendar.parse(spec.at).next_after(datetime.fromtimestamp(after, UTC), calendar.zone(spec.timezone))
        return None if start is None else start.timestamp()

    async def run(self, ready: asyncio.Event) -> None:
        """Start each drill whose time has come; sleep until the next (at most LOOK_AHEAD)."""
        ready.set()
        while True:
            try:
                wait = await self.start_due(self._clock())
            except Exception:  # the one catch-all of the schedule's loop: it must go on
                log.exception("drill_schedule_failed")
                wait = LOOK_AHEAD
            await asyncio.sleep(wait)

    async def start_due(self, now: float) -> float:
        """Start (or skip) every occurrence due by `now`; the seconds until the next one (at most LOOK_AHEAD)."""
        wait = LOOK_AHEAD
        for name, spec in list(self._estate.config.drills.items()):
            if not self._exists(spec):
                continue
            while (start := self.next_occurrence(name, spec, now)) is not None and start <= now:
                self._after[name] = start
                await self._start(name, spec, start)
            if start is not None:
                wait = min(wait, start - now)
        return max(wait, 0.0)

    def _exists(self, spec: DrillConfig) -> bool:
        config = self._estate.config
        return spec.plan in config.plans if spec.plan is not None else spec.service in config.services

    async def _start(self, name: str, spec: DrillConfig, start: float) -> None:
        blackout = spec.in_blackout(datetime.fromtimestamp(start, UTC))
        if blackout is not None:
            self._skip(name, spec, start, f"in its blackout {blackout}")
            return
        reason = f"{name}: {spec.reason}"
        outcome = await self._operations.perform(
            DrillPlan(spec.plan, BY, reason, spec.hold, (name, start)) if spec.plan is not None
            else Drill(spec.service or "", BY, reason, spec.kind, spec.hold, name, start))
        if isinstance(outcome, Refused):
            self._skip(name, spec, start, outcome.reason)

    def _skip(self, name: str, spec: DrillConfig, start: float, why: str) -> None:
        at = datetime.fromtimestamp(start, UTC).isoformat()
        reason = f"scheduled drill {name} of {at} skipped: {why}"
        log.warning("drill_skipped", drill=name, service=spec.service, plan=spec.plan, occurrence=at, why=why)
        self._emit(Event(EventKind.DRILL_SKIPPED, self._clock(), spec.service, None, reason,
                         DrillSkipped(name, start, spec.drill_kind)))
