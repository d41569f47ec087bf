"""The guards on a runbook drill's cleanup after a restart (bcd.drills.restart), against a real engine, runner
and SQLite journal: while the journal cannot be written the cleanup does not run and the drill's end says so;
once it can, the next start runs it (the drill's end had not reached the journal either)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bcd.bus import Bus
from bcd.config import parse
from bcd.drills.records import DrillJournal
from bcd.drills.runner import Drills
from bcd.events import DrillStarted, Event, EventKind
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.operations import Operations
from bcd.view import EngineView
from tests.helpers.runner_kit import acting, eventually
from tests.helpers.sqlite_full import BIG, FullJournal
from tests.unit.drills.test_schedule import CONFIG as SCHEDULE_CONFIG

CONFIG = SCHEDULE_CONFIG.replace("runbooks:\n", """runbooks:
  rehearse:
    steps: [{{name: copy up, sleep: {{duration: 1ms}}}}]
    cleanup: [{{name: copy down, sleep: {{duration: 1ms}}}}]
""").replace("    active: dorset\n", "    active: dorset\n    drill_runbook: rehearse\n")


async def test_the_cleanup_does_not_run_while_the_journal_cannot_be_written(tmp_path: Path) -> None:
    engine, _ = acting(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus())
    engine.emit(Event(EventKind.DRILL_STARTED, 1000.0, "payroll", "dorset", "drill payroll@1 by olive: x",
                      DrillStarted("payroll@1", "runbook", 0.0, "olive", "dorset", "dorset")))
    engine.writer.flush()
    emitted: list[Event] = []
    records, view = DrillJournal(engine.journal), EngineView(engine)  # as the daemon makes them, before the disk fills
    full = FullJournal(engine.journal)
    full.fill()
    engine.observe(Observation(ProbeKey("payroll", "hampshire", "health"), Result.FAIL, 0.01, BIG, 1001.0))
    engine.writer.flush()  # the group commit, now: the change needs room the journal lacks
    assert engine.writer.refusal() is not None
    drills = Drills(Operations(engine), view, lambda event, **_: emitted.append(event), poll=0.01)
    drills.recover(records)
    (end,) = emitted
    assert end.data.result == "interrupted"  # type: ignore[union-attr]
    assert end.reason.startswith("drill payroll@1 interrupted: the daemon stopped during it; its cleanup did not run "
                                 "(refused: journal cannot be written: database or disk is full"), end.reason
    assert end.reason.endswith("): run the cleanup steps by hand"), end.reason
    assert engine.runs.recent("payroll") == []  # nothing ran

    full.free()  # the drill's end was not journaled (it went to `emitted` only): the next start runs the cleanup
    await eventually(lambda: engine.writer.refusal() is None, 10, "the journal written again")  # its retry
    emitted.clear()
    drills = Drills(Operations(engine), view, lambda event, **_: emitted.append(event), poll=0.01)
    drills.recover(records)
    (run,) = engine.runs.recent("payroll")
    assert (run.evidence["drill"], run.evidence["drill_cleanup"], run.trigger) == ("payroll@1", True, "drill")
    await asyncio.wait_for(drills.live["payroll"].task, 10)  # type: ignore[arg-type]
    (end,) = emitted
    assert end.reason == ("drill payroll@1 interrupted: the daemon stopped during it; its cleanup ran after the "
                          f"restart (run {run.id}) and completed")
    assert [(step.phase, step.name, step.outcome) for step in engine.runs.steps(run.id)] == [
        ("cleanup", "copy down", "succeeded")]
    engine.close()
