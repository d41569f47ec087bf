"""The group commit when the journal cannot be written: a real SQLite file made full with its own
`PRAGMA max_page_count` (SQLITE_FULL, "database or disk is full"), a fake timer for the retries."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from bcd import logging as bcd_logging
from bcd.bus import Bus
from bcd.events import Event, EventKind, SiteTransition, payload_json
from bcd.journal import Journal, JournalWriteError, RunJournal, RunRecord, SavedSite, StepRecord
from bcd.journal.ledger import SEAL_EVERY
from bcd.journal.writer import RETRY_FIRST, RETRY_MAX, JournalWriter
from bcd.model import RunResult
from bcd.outputs.metrics import JournalCollector
from tests.helpers.sqlite_full import BIG, FullJournal


@dataclass
class FakeTimers:
    """A fake of the event loop's call_later: the test fires the timers itself."""

    due: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimers.Handle:
        entry = (delay, callback)
        self.due.append(entry)
        return FakeTimers.Handle(self, entry)

    def fire(self, callback: Callable[[], None] | None = None) -> float:
        """Run the oldest timer (of `callback`, if given); returns its delay."""
        entry = next(entry for entry in self.due if callback is None or entry[1] == callback)
        self.due.remove(entry)
        entry[1]()
        return entry[0]

    @dataclass
    class Handle:
        timers: FakeTimers
        entry: tuple[float, Callable[[], None]]

        def cancel(self) -> None:
            if self.entry in self.timers.due:
                self.timers.due.remove(self.entry)


def event(n: int, reason: str = "") -> Event:
    return Event(EventKind.SITE_TRANSITION, float(n), "payroll", "dorset", reason or f"change {n}",
                 SiteTransition("up", "down"))


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "bcd.sqlite")


def writer_for(journal: Journal, timers: FakeTimers, bus: Bus | None = None, **kwargs: int) -> JournalWriter:
    return JournalWriter(journal, bus or Bus(), clock=lambda: 1_000_000.0, call_later=timers.call_later, **kwargs)


def flushed(writer: JournalWriter, timers: FakeTimers, *events: Event) -> None:
    for item in events:
        writer.emit(item)
    timers.fire(writer.flush)


def test_writes_in_one_group_commit_and_publishes_with_ids(journal: Journal) -> None:
    timers, bus = FakeTimers(), Bus()
    seen = bus.subscribe("test")
    writer = writer_for(journal, timers, bus)
    flushed(writer, timers, event(1), event(2))
    assert [e.reason for e in journal.events()] == ["change 1", "change 2"]
    published = [seen.queue.get_nowait() for _ in range(2)]
    assert [e.id for e in published] == [e.id for e in journal.events()]
    assert writer.refusal() is None and timers.due == [(SEAL_EVERY, writer._seal_now)]  # the only timer left


def test_entries_are_sealed_by_a_commit_when_due_and_by_the_timer_when_no_commit_comes(tmp_path: Path) -> None:
    clock = [0.0]
    journal = Journal(tmp_path / "bcd.sqlite", clock=lambda: clock[0])
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    assert journal.ledger is not None

    def sealed() -> list[tuple[int, int]]:
        return journal.execute("SELECT first, seq FROM seals ORDER BY seq").fetchall()

    flushed(writer, timers, event(1))  # entry 2 (the genesis is 1)
    clock[0] = 3.0
    flushed(writer, timers, event(2))
    assert timers.due == [(SEAL_EVERY, writer._seal_now)] and sealed() == []  # one timer for both
    clock[0] = 5.0
    timers.fire(writer._seal_now)
    assert sealed() == [(2, 3)] and journal.ledger.unsealed == 0 and timers.due == []
    clock[0] = 40.0
    flushed(writer, timers, event(3))
    clock[0] = 45.0
    flushed(writer, timers, event(4))  # entry 4 has waited SEAL_EVERY: this commit seals both
    assert sealed()[-1] == (4, 5)
    clock[0] = 46.0
    flushed(writer, timers, event(5))
    timers.fire(writer._seal_now)  # the timer of entry 4 finds entry 6 too young: it waits for it
    assert sealed()[-1] == (4, 5) and timers.due == [(SEAL_EVERY, writer._seal_now)]
    clock[0] = 51.0
    timers.fire(writer._seal_now)
    assert sealed()[-1] == (6, 6) and journal.ledger.unsealed == 0 and timers.due == []


def test_a_full_journal_logs_and_publishes_at_once_queues_in_order_and_retries_until_space_returns(
    journal: Journal,
) -> None:
    timers, bus = FakeTimers(), Bus()
    seen = bus.subscribe("test")
    writer = writer_for(journal, timers, bus)
    disk = FullJournal(journal)
    disk.fill()
    with capture_logs() as logs:
        flushed(writer, timers, event(1, BIG), event(2))
    # logged and published although nothing was journaled
    assert [(line["event"], line.get("journaled")) for line in logs if line["event"] == "site_transition"] == [
        ("site_transition", False), ("site_transition", False)]
    assert [(e.reason[:8], e.id) for e in (seen.queue.get_nowait(), seen.queue.get_nowait())] == [
        ("x" * 8, None), ("change 2", None)]
    failed = next(line for line in logs if line["event"] == "journal_write_failed")
    assert failed["error"] == "database or disk is full" and failed["log_level"] == "error"
    refusal = writer.refusal()
    assert refusal is not None and refusal.startswith("journal cannot be written: database or disk is full since 1970")
    assert writer.stats.write_errors == 1 and writer.stats.queued == 2
    # later changes wait behind the queue for the retry (no write is tried meanwhile)
    flushed(writer, timers, event(3))
    assert writer.stats.write_errors == 1 and writer.stats.queued == 3
    # retries back off while the disk stays full
    delays = [timers.fire() for _ in range(6)]
    assert delays == [RETRY_FIRST, RETRY_FIRST * 2, RETRY_FIRST * 4, RETRY_FIRST * 8, RETRY_FIRST * 16, RETRY_MAX]
    assert writer.stats.write_errors == 7 and journal.events() == []
    disk.free()
    with capture_logs() as logs:
        timers.fire()
    assert [e.reason[:8] for e in journal.events()] == ["x" * 8, "change 2", "change 3"]
    assert [line for line in logs if line["event"] == "journal_recovered"] == [
        {"event": "journal_recovered", "written": 3, "dropped": 0, "write_errors": 7, "failed_for": 0.0,
         "log_level": "info"}]
    assert writer.refusal() is None and writer.stats.queued == 0 and timers.due == [(SEAL_EVERY, writer._seal_now)]
    assert seen.queue.qsize() == 1  # event 3 only: what was queued is not published again


def test_beyond_the_bound_the_newest_events_are_dropped_counted_and_recorded_as_a_gap(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers, max_events=3)
    disk = FullJournal(journal)
    disk.fill()
    flushed(writer, timers, event(1, BIG), event(2), event(3))
    flushed(writer, timers, event(4), event(5))
    assert writer.stats.queued == 3 and writer.stats.dropped == 2
    disk.free()
    timers.fire()
    events = journal.events()
    assert [e.kind for e in events] == ["site_transition"] * 3 + ["journal_gap"]
    assert [e.at for e in events[:3]] == [1.0, 2.0, 3.0]  # the oldest are kept, in order
    assert payload_json(events[3].data) == {"dropped": 2, "from": 4.0, "to": 5.0}
    assert events[3].reason.startswith("2 events from 1970-01-01T00:00:04Z to 1970-01-01T00:00:05Z were not journaled")
    assert writer.stats.dropped == 2  # a counter: it stays


def test_state_rows_keep_their_latest_version_while_queued(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    disk = FullJournal(journal)
    disk.fill()
    for n, base in enumerate(("down", "up", "down")):
        writer.sites[("payroll", "dorset")] = SavedSite("payroll", "dorset", base, False, None, "", float(n), BIG)
        flushed(writer, timers, event(n))
    assert writer.stats.queued == 4  # one site row, three events
    disk.free()
    timers.fire()
    assert [(s.base, s.since) for s in journal.sites()] == [("down", 2.0)]


def run_record(reason: str = "active down") -> RunRecord:
    return RunRecord(0, "payroll", "failover", "failover", "auto", reason, "dorset", "hampshire", False, False,
                     {}, 1.0, None, "running", "", None, None, None)


def test_a_run_or_step_is_refused_when_it_cannot_be_journaled_and_what_ended_is_kept(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    runs = RunJournal(journal, writer)
    run_id = runs.create(run_record())
    runs.step_started(StepRecord(run_id, 1, "main", "stop", "command", {}, 2.0, None, 0, "running", ""))
    disk = FullJournal(journal)
    disk.fill()
    with pytest.raises(JournalWriteError, match="journal cannot be written: database or disk is full"):
        runs.step_started(StepRecord(run_id, 2, "main", "start", "command", {"x": BIG}, 3.0, None, 0, "running", ""))
    with pytest.raises(JournalWriteError):
        runs.create(run_record(BIG))
    assert writer.refusal() is not None and writer.stats.write_errors == 2
    # what already happened is kept, in order, and written first when the journal can be written again
    runs.step_finished(run_id, 1, ended=4.0, attempts=1, outcome="succeeded", output=BIG)
    runs.finish(run_id, RunResult.FAILED, 5.0, "step 2 'start' did not run")
    flushed(writer, timers, event(6))
    assert writer.stats.queued == 3
    assert [r.result for r in runs.recent()] == ["running"]
    disk.free()
    timers.fire()
    (record,) = runs.recent()
    assert (record.result, record.ended, record.detail) == ("failed", 5.0, "step 2 'start' did not run")
    assert [(s.seq, s.outcome) for s in runs.steps(run_id)] == [(1, "succeeded")]
    assert writer.refusal() is None


def test_a_failure_seen_by_the_run_journal_alone_is_cleared_by_a_probe_write(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    recovered: list[bool] = []
    writer.recovered = lambda: recovered.append(True)
    full = FullJournal(journal)
    full.fill()
    writer.report(sqlite3.OperationalError("disk I/O error"))
    assert writer.refusal() == "journal cannot be written: disk I/O error since 1970-01-12T13:46:40Z"
    assert writer.stats.queued == 0
    timers.fire()  # nothing queued: a small real write tells whether the journal is writable again
    assert writer.refusal() == "journal cannot be written: database or disk is full since 1970-01-12T13:46:40Z"
    assert writer.stats.write_errors == 2 and recovered == []
    full.free()
    timers.fire()
    assert writer.refusal() is None and recovered == [True]


def test_a_failed_commit_leaves_no_transaction_open(journal: Journal) -> None:
    disk = FullJournal(journal)
    disk.fill()
    with pytest.raises(sqlite3.OperationalError, match="full"), journal.transaction(sync=False):
        journal.append(event(1, BIG))
    disk.free()
    with journal.transaction():
        journal.append(event(2))
    assert [e.reason for e in journal.events()] == ["change 2"]


def test_the_collector_shows_errors_queue_drops_and_writability(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers, max_events=1)
    FullJournal(journal).fill()
    flushed(writer, timers, event(1, BIG), event(2))
    samples = {s.name: s.value for family in JournalCollector(writer.stats).collect() for s in family.samples}
    assert samples == {"bcd_journal_write_errors_total": 1, "bcd_journal_queued_entries": 1,
                       "bcd_journal_dropped_total": 1, "bcd_journal_writable": 0}


def test_close_writes_what_it_can_and_says_what_is_lost(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    FullJournal(journal).fill()
    flushed(writer, timers, event(1, BIG))
    with capture_logs() as logs:
        writer.close()
    assert [(line["event"], line["entries"]) for line in logs if line["event"] == "journal_entries_lost"] == [
        ("journal_entries_lost", 1)]
    assert timers.due == []


def test_an_event_logged_at_a_later_commit_carries_its_own_time(journal: Journal) -> None:
    timers = FakeTimers()
    writer = JournalWriter(journal, Bus(), call_later=timers.call_later)
    happened = time.time() - 30.0  # long before the commit, so a flush-time stamp could not pass for it
    with capture_logs(processors=bcd_logging.stamps()) as logs:
        writer.emit(Event(EventKind.SITE_TRANSITION, happened, "payroll", "dorset", "3 failures",
                          SiteTransition("up", "down")))
        assert logs == []  # nothing is logged before the group commit
        timers.fire(writer.flush)
    (line,) = [line for line in logs if line["event"] == "site_transition"]
    assert line["timestamp"] == datetime.fromtimestamp(happened, UTC).isoformat().replace("+00:00", "Z")
    logged = datetime.fromisoformat(line["logged_at"])
    assert logged.timestamp() - happened >= 30.0
    assert "at" not in line


@pytest.mark.parametrize("at", ["soon", True, float("inf")])
def test_a_line_whose_at_is_not_a_time_keeps_the_time_of_writing(at: object) -> None:
    log = structlog.get_logger("test-own-time")
    with capture_logs(processors=bcd_logging.stamps()) as logs:
        log.info("checked", at=at)
    (line,) = logs
    assert "logged_at" not in line
    assert abs(datetime.fromisoformat(line["timestamp"]).timestamp() - time.time()) < 60
    assert line["at"] == at  # kept as an ordinary field


def test_each_event_is_logged_with_its_reason_unless_the_emitter_says_otherwise(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    with capture_logs() as logs:
        writer.emit(event(1))
        writer.emit(event(2), reason="said by the emitter")
        timers.fire()
    assert [line["reason"] for line in logs if line["event"] == "site_transition"] == [
        "change 1", "said by the emitter"]


def test_an_event_logged_with_warn_is_one_warning_line_with_the_fields_given(journal: Journal) -> None:
    timers = FakeTimers()
    writer = writer_for(journal, timers)
    with capture_logs() as logs:
        writer.emit(event(1), warn=True, result="failed", reason="the raw reason")
        writer.emit(event(2))
        timers.fire(writer.flush)
    lines = [(line["log_level"], line.get("result"), line["reason"], "warn" in line) for line in logs
             if line["event"] == "site_transition"]
    assert lines == [("warning", "failed", "the raw reason", False), ("info", None, "change 2", False)]
    assert [e.reason for e in journal.events()] == ["change 1", "change 2"]  # the journal keeps the event's own
