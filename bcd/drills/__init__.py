"""DR drills: rehearsed recoveries carried out through `bcd.operations` (runner.py), their preconditions (pure,
checks.py), their schedule (schedule.py) and what the journal says about them (records.py, which the estate view
reads: so this package's entry imports the rest only when the daemon starts it)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bcd.lifetime import Run, hold

if TYPE_CHECKING:
    from bcd.events import Emit
    from bcd.journal import Journal
    from bcd.operations import DrillControl, Operations
    from bcd.view import EstateView


def make(journal: Journal, operations: Operations, estate: EstateView,
         emit: Emit) -> tuple[DrillControl, Run]:
    """The daemon's drills, acting through `operations` (made without them), and their part: drills the journal
    holds unfinished end `interrupted` as it starts, then scheduled drills start at their times, through operations
    joined with the drills. Stopped before the runner: a drill under way ends `interrupted`, then the runner stops
    its run. Made before the event loop runs: nothing is journaled or emitted until the part starts."""
    from bcd.drills.records import DrillJournal
    from bcd.drills.runner import Drills
    from bcd.drills.schedule import DrillSchedule

    records = DrillJournal(journal)
    drills = Drills(operations, estate, emit)
    schedule = DrillSchedule(operations.joined(drills=drills), estate, emit, records)

    async def run(ready: asyncio.Event) -> None:
        drills.recover(records)
        task = asyncio.get_running_loop().create_task(schedule.run(asyncio.Event()), name="drill-schedule")
        try:
            await hold(ready, drills.stop)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return drills, run
