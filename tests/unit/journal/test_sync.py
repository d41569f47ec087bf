"""The runs' group commit (bcd.journal.sync) on a real SQLite journal: unsynced commits made durable by one
fsync of the WAL file for every caller waiting at the time; a step starts only once its record is on disk. The
fsyncs are counted by a spy around the real `os.fsync`; a disk that refuses to sync is a fake (named below),
as an I/O error cannot be had here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.journal import Journal, JournalWriteError, RunJournal, RunRecord
from bcd.journal import sync as journal_sync
from bcd.journal.writer import JournalWriter, iso8601
from bcd.model import RunKind, RunResult
from tests.helpers.runner_kit import Kit, eventually

NOTHING = "INSERT OR REPLACE INTO service_state VALUES (?, 'up', 'dorset', 0, 'test')"


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The files synced through bcd.journal.sync (really synced: the spy calls the real fsync)."""
    calls: list[str] = []
    real = journal_sync._fsync

    def spy(path: Path) -> None:
        calls.append(path.name)
        real(path)

    monkeypatch.setattr(journal_sync, "_fsync", spy)
    return calls


def commit(journal: Journal, name: str) -> None:
    with journal.transaction(sync=False):
        journal.execute(NOTHING, (name,))


async def test_callers_waiting_together_share_one_fsync_of_the_wal(tmp_path: Path, synced: list[str]) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")

    async def write_then_wait(name: str) -> None:
        commit(journal, name)
        await journal.syncs.durable()

    await asyncio.gather(*(write_then_wait(f"service{n}") for n in range(5)))
    assert synced == ["bcd.sqlite-wal", tmp_path.name]  # the WAL once; its directory once, the first time
    commit(journal, "late")
    await journal.syncs.durable()
    assert synced[2:] == ["bcd.sqlite-wal"]
    await journal.syncs.durable()  # nothing written since: no sync
    assert len(synced) == 3
    journal.close()


def started(runs: RunJournal) -> int:
    return runs.create(RunRecord(0, "payroll", "move", RunKind.FAILOVER, "auto", "active down", "dorset", "hampshire",
                                 False, False, {}, 1.0, None, RunResult.RUNNING, "", None, None, None))


async def test_a_runs_end_is_synced_in_the_background(tmp_path: Path, synced: list[str]) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    runs = RunJournal(journal)
    runs.finish(started(runs), RunResult.SUCCEEDED, 2.0, "done", sync=False)
    assert journal.syncs.pending == 1
    await eventually(lambda: journal.syncs.pending == 0, 5, "the run's end synced")
    assert synced == ["bcd.sqlite-wal", tmp_path.name]
    await journal.syncs.durable()  # already on disk: nothing more to sync
    assert len(synced) == 2
    journal.close()


async def test_a_background_sync_that_fails_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_sync, "_fsync", RefusingDisk())
    journal = Journal(tmp_path / "bcd.sqlite")
    writer = JournalWriter(journal, Bus())
    runs = RunJournal(journal, writer)
    runs.finish(started(runs), RunResult.SUCCEEDED, 2.0, "done", sync=False)
    await eventually(lambda: writer.failing, 5, "the failed sync reported")
    assert writer.refusal() == ("journal cannot be written: sync failed: [Errno 5] Input/output error since "
                                + iso8601(writer.failing_since or 0.0))
    writer.close()
    journal.close()


async def test_a_synced_commit_needs_no_group_commit(tmp_path: Path, synced: list[str]) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    with journal.transaction():  # synchronous=FULL: SQLite syncs it itself
        journal.execute(NOTHING, ("payroll",))
    await journal.syncs.durable()
    assert synced == []
    journal.close()


class RefusingDisk:
    """A fake of a disk whose fsync fails (EIO): what cannot be had on this machine."""

    def __init__(self) -> None:
        self.refusing = True

    def __call__(self, path: Path) -> None:
        if self.refusing:
            raise OSError(5, "Input/output error")


async def test_a_step_runs_only_once_its_start_is_on_disk(kit: Kit, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_sync, "_fsync", RefusingDisk())
    ran = tmp_path / "ran"
    record, steps = await kit.run({"steps": [{"name": "touch", "command": {"argv": ["/usr/bin/touch", str(ran)]}}]})
    assert not ran.exists()
    assert record.result == "failed"
    assert "sync failed: [Errno 5] Input/output error: step 1 'touch' did not run" in record.detail
    assert [(step.name, step.outcome) for step in steps] == [("touch", "failed")]


async def test_a_failed_sync_is_a_journal_write_error_for_every_waiter(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    disk = RefusingDisk()
    monkeypatch.setattr(journal_sync, "_fsync", disk)
    journal = Journal(tmp_path / "bcd.sqlite")
    runs = RunJournal(journal)
    commit(journal, "payroll")
    outcomes = await asyncio.gather(runs.durable(), runs.durable(), return_exceptions=True)
    assert [str(outcome) for outcome in outcomes] == [
        "journal cannot be written: sync failed: [Errno 5] Input/output error"] * 2
    assert all(isinstance(outcome, JournalWriteError) for outcome in outcomes)
    disk.refusing = False
    await runs.durable()  # the disk is back: the next sync covers what the failed one did not
    journal.close()
