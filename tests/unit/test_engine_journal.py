"""The engine while its journal cannot be written: a real SQLite journal held full by `PRAGMA max_page_count`;
no automatic run starts (the service is blocked, guard journal_unwritable), operator actions are refused,
and once the journal is written again the held failover starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.journal import Journal, JournalWriteError
from bcd.model import Guard, Observation, ProbeKey, Result, RunKind, ServiceStatus
from bcd.mqtt.commands import Command, CommandAction
from bcd.mqtt.execute import execute
from bcd.operations import Operations
from bcd.policy import Request
from tests.helpers.runner_kit import acting, eventually
from tests.helpers.sqlite_full import BIG, FullJournal
from tests.unit.outputs.test_metrics import CONFIG

AUTO = CONFIG.replace("mode: manual", "mode: auto")  # the estate of the metrics tests, failing over by itself


def observe(engine: Engine, site: str, result: Result, reason: str = "") -> None:
    engine.observe(Observation(ProbeKey("payroll", site, "health"), result, 0.01, reason or str(result), 100.0))


async def test_no_run_starts_and_operators_are_refused_until_the_journal_is_written_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    engine, runner = acting(parse(AUTO.format(state=tmp_path, extra="")), journal, Bus())
    observe(engine, "hampshire", Result.OK)
    full = FullJournal(journal)
    full.fill()
    # down: the failover is due; its run record (the evidence quotes the reason) needs room the journal lacks
    observe(engine, "dorset", Result.FAIL, BIG)
    assert engine.writer.refusal() is not None
    view = engine.services["payroll"]
    assert (view.status, view.guard) == (ServiceStatus.BLOCKED, Guard.JOURNAL_UNWRITABLE)
    assert view.reason == "payroll: failover to hampshire not started: journal cannot be written: database or disk is full"
    engine.tick()  # decided again while it fails: refused up front, and the reason says since when
    assert engine.services["payroll"].reason.startswith(
        "payroll: failover to hampshire not started: journal cannot be written: database or disk is full since ")
    assert runner.active == {} and engine.runs.recent() == []
    refused = "refused: journal cannot be written: database or disk is full"
    with pytest.raises(JournalWriteError, match=refused):
        await engine.submit("payroll", Request(RunKind.FAILOVER, force=True), "olive", "now")
    with pytest.raises(JournalWriteError, match=refused):
        engine.acknowledge("payroll", "olive", "seen")
    with pytest.raises(JournalWriteError, match=refused):
        engine.start_maintenance("payroll", None, 600.0, "works", "olive")
    with pytest.raises(JournalWriteError, match=refused):
        engine.end_maintenance("payroll", None, "olive")
    for action in (CommandAction.FAILOVER, CommandAction.ACK):
        command = Command(f"c-{action}", action, "now", "olive", 100.0, service="payroll")
        accepted, said = await execute(Operations(engine), command)  # the MQTT reader's refusal says why, as the API's 503 does
        assert (accepted, said.startswith(refused)) == (False, True), said

    full.free()
    await eventually(lambda: engine.writer.refusal() is None, 10, "the retry writing the journal again")
    engine.tick()  # a blocked service is decided again every tick: the held failover starts now
    (run,) = runner.active.values()
    assert run.request.to_site == "hampshire"
    await runner.stop()
