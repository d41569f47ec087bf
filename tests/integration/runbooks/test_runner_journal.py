"""The runner when its journal cannot be written: a real Runner on a real SQLite journal held full by
`PRAGMA max_page_count`, real HTTP steps against a recorder."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from bcd.bus import Bus
from bcd.journal import Journal, JournalWriteError, RunJournal
from bcd.journal.writer import JournalWriter
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import FakeHooks, Kit, eventually, http_step
from tests.helpers.sqlite_full import BIG, FullJournal


async def test_a_step_that_cannot_be_journaled_never_runs_and_the_runs_end_is_written_later(
    tmp_path: Path, recorder: Recorder
) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    writer = JournalWriter(journal, Bus())
    full = FullJournal(journal)
    async with aiohttp.ClientSession() as session:
        kit = Kit(RunJournal(journal, writer), FakeHooks(), session)
        run = kit.start({"steps": [
            http_step("first", recorder.url("/first")),
            {"name": "ok?", "approval": {"timeout": "30s"}},
            http_step("second", recorder.url("/second"), body=BIG),  # its record needs room the journal lacks
        ]})
        await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting")
        full.fill()
        assert kit.runner.approve(run.id, "olive")
        assert run.task is not None
        await run.task
        assert recorder.paths() == ["/first"]  # the second step never ran
        finished = next(e for e in kit.hooks.events if e.kind == "run_finished")
        assert finished.to_json()["result"] == "failed"
        assert finished.reason.startswith("journal cannot be written: database or disk is full: step 3 'second' "
                                          "did not run, nor any after it")
        assert writer.refusal() is not None
        assert kit.journal.get(run.id).result == "running"  # type: ignore[union-attr]  # its end waits in the queue
        full.free()
        await eventually(lambda: writer.refusal() is None, 10, "the journal written again")
        record, steps = kit.finished(run.id)
        assert record.result == "failed" and record.detail == finished.reason
        assert [(s.name, s.outcome) for s in steps] == [("first", "succeeded"), ("ok?", "succeeded")]
        await kit.runner.stop()


async def test_a_run_that_cannot_be_journaled_does_not_start(tmp_path: Path, recorder: Recorder) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    writer = JournalWriter(journal, Bus())
    async with aiohttp.ClientSession() as session:
        kit = Kit(RunJournal(journal, writer), FakeHooks(), session)
        FullJournal(journal).fill()
        with pytest.raises(JournalWriteError, match="database or disk is full"):
            kit.start({"steps": [http_step("first", recorder.url("/first"))]}, reason=BIG)
        assert kit.runner.active == {} and kit.hooks.events == [] and recorder.requests == []
        assert writer.stats.write_errors == 1
