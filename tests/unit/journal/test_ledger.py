"""The tamper-evident ledger on a real SQLite file: changed or deleted rows (made with the `sqlite3` command,
as a tamperer would) are named by the check; an export checks offline; a journal from before the chain starts
it with a genesis entry; pruning keeps what remains verifiable.

An events row carries its own entry (its `seq` column; its hash is kept by a seal): changing the row changes
that entry, and deleting it leaves a gap in the chain; runs and steps have theirs in the ledger table, which also keeps what
the row said (so the check shows the old value)."""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bcd.bus import Bus
from bcd.events import Event, EventKind, SiteTransition
from bcd.journal import Journal, RunJournal, RunRecord, StepRecord
from bcd.journal.ledger import canonical, event_body, sealed_hash
from bcd.journal.ledger_check import Report, check_database, check_lines, entries, export, head_at, open_readonly
from bcd.journal.writer import JournalWriter
from bcd.model import RunResult
from tests.helpers.sqlite_full import BIG, FullJournal
from tests.unit.journal.test_writer import FakeTimers

DOWN = SiteTransition("up", "down")
SQLITE3 = shutil.which("sqlite3")
needs_sqlite3 = pytest.mark.skipif(SQLITE3 is None, reason="the sqlite3 command is not installed (make deps)")


def written(path: Path) -> Journal:
    """A journal with three events, a finished run with two steps, and an acknowledgement."""
    journal = Journal(path)
    with journal.transaction(sync=False):
        for n in range(3):
            journal.append(Event(EventKind.SITE_TRANSITION, float(n + 1), "payroll", "dorset", f"change {n}", DOWN))
    runs = RunJournal(journal)
    run_id = runs.create(RunRecord(0, "payroll", "failover", "failover", "auto", "active down", "dorset",
                                   "hampshire", False, False, {}, 5.0, None, "running", "", None, None, None))
    for seq in (1, 2):
        runs.step_started(StepRecord(run_id, seq, "main", f"step {seq}", "command", {}, 6.0, None, 0, "running", ""))
        runs.step_finished(run_id, seq, ended=7.0, attempts=1, outcome="failed" if seq == 2 else "succeeded",
                           output="")
    runs.finish(run_id, RunResult.FAILED, 8.0, "step 2 failed")
    runs.acknowledge("payroll", "alice")
    return journal


def check(path: Path) -> Report:
    with contextlib.closing(open_readonly(path)) as db:
        return check_database(db)


def tamper(path: Path, sql: str) -> None:
    """Change the file with the sqlite3 command, outside bcd."""
    assert SQLITE3 is not None
    subprocess.run([SQLITE3, str(path), sql], check=True, timeout=30)


def test_an_untouched_journal_is_intact_and_every_row_is_covered(tmp_path: Path) -> None:
    written(tmp_path / "j.sqlite").close()
    report = check(tmp_path / "j.sqlite")
    assert report.problems == []
    # genesis, 3 events, a run created, two steps started and finished, run finished, acknowledged
    assert report.entries == 1 + 3 + 1 + 4 + 2
    assert report.rows == 3 + 1 + 2


@needs_sqlite3
@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE events SET reason = 'nothing happened' WHERE id = 2",
     "entry 3 (events 2) was changed: its hash does not match its content"),
    ("UPDATE runs SET acknowledged_by = 'mallory'", "runs row 1 differs from entry 11 (acknowledged_by: 'alice'"),
    ("UPDATE steps SET outcome = 'succeeded' WHERE seq = 2", "steps row 1/2 differs from entry 9 (outcome: 'failed'"),
    ("UPDATE ledger SET body = replace(body, 'active down', 'nothing') WHERE seq = 5",
     "entry 5 (runs 1) was changed: its hash does not match its content"),
])
def test_a_changed_row_is_named(tmp_path: Path, sql: str, named: str) -> None:
    path = tmp_path / "j.sqlite"
    written(path).close()
    tamper(path, sql)
    first = check(path).problems[0][1]
    assert first.startswith(named), first


@needs_sqlite3
@pytest.mark.parametrize(("sql", "named"), [
    ("DELETE FROM events WHERE id = 2", "entry 3 missing: entry 4 follows entry 2 (events row 2 deleted)"),
    ("DELETE FROM ledger WHERE seq = 5", "entry 5 missing: entry 6 follows entry 4"),
    ("DELETE FROM steps WHERE seq = 1", "steps row 1/1 is missing (entry 7 records it)"),
    ("INSERT INTO events (at, kind, service, site, reason, data) VALUES (9, 'site_transition', 'payroll', "
     "'dorset', 'forged', '{}')", "events row 4 has no ledger entry (written outside bcd)"),
])
def test_a_deleted_or_added_row_is_named(tmp_path: Path, sql: str, named: str) -> None:
    path = tmp_path / "j.sqlite"
    written(path).close()
    tamper(path, sql)
    assert check(path).problems[0][1] == named


@needs_sqlite3
def test_deleted_events_rows_are_one_gap_and_the_rest_of_the_chain_still_checks(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    for n in range(5):
        journal.append(Event(EventKind.SITE_TRANSITION, float(n + 1), "payroll", "dorset", f"change {n}", DOWN))
    journal.close()
    tamper(path, "DELETE FROM events WHERE id IN (2, 3)")  # entries 3 and 4
    assert [text for _, text in check(path).problems] == [
        "entries 3..4 missing: entry 5 follows entry 2 (events rows 2..3 deleted)"]


def test_a_rewritten_entry_breaks_the_link_to_the_next(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    written(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        (first, hashes) = db.execute("SELECT first, hashes FROM seals WHERE first <= 2 AND seq >= 2").fetchone()
        start = (2 - first) * 64  # events row 1's own entry, as its seal keeps it
        db.execute("UPDATE seals SET hashes = ? WHERE first = ?", (hashes[:start] + "f" * 64 + hashes[start + 64:],
                                                                   first))
        db.commit()
    problems = [text for _, text in check(path).problems]
    assert problems[0] == "entry 2 (events 1) was changed: its hash does not match its content"
    assert problems[1].startswith("entry 3 does not follow entry 2: its prev is not that entry's hash")


def test_an_export_checks_offline_and_a_changed_line_fails(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    written(path).close()
    out = io.StringIO()
    with contextlib.closing(open_readonly(path)) as db:
        assert export(db, out, 2.0, 4.0) == 2  # the events at 2 and 3 (a period: its first prev taken as given)
        everything = io.StringIO()
        assert export(db, everything) == 11
    whole = Report()
    check_lines(everything.getvalue().splitlines(), whole)
    assert whole.problems == [] and whole.first == 1
    lines = out.getvalue().splitlines()
    report = Report()
    check_lines(lines, report)
    assert report.problems == [] and report.entries == len(lines)
    lines[1] = lines[1].replace("change 2", "change X")
    bad = Report()
    check_lines(lines, bad)
    assert [text for _, text in bad.problems] == [
        f"entry {bad.first + 1} (events 3) was changed: its hash does not match its content"]


def test_a_journal_from_before_the_chain_is_adopted_with_a_genesis_entry(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    written(path).close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP TABLE ledger")  # as a journal written by a bcd before this one
        db.commit()
    with capture_logs() as logs:
        Journal(path).close()
    (started,) = [line for line in logs if line["event"] == "journal_chain_started"]
    assert started["adopted"] == {"events": 3, "runs": 1, "steps": 2}
    assert "earlier history is not proven" in started["reason"]
    report = check(path)
    assert report.problems == [] and report.rows == 6 and report.entries == 1 + 6
    with contextlib.closing(sqlite3.connect(path)) as db:
        (kind, body) = db.execute("SELECT kind, body FROM ledger WHERE seq = 1").fetchone()
    assert kind == "genesis" and '"adopted":{"events":3,"runs":1,"steps":2}' in body


def test_pruning_keeps_what_remains_verifiable_and_the_runs(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = written(path)
    with journal.transaction(sync=False):
        journal.append(Event(EventKind.SITE_TRANSITION, 2e9, "payroll", "dorset", "much later", DOWN))
    pruned = journal.prune(before=1.9e9, now=2e9 + 1)  # all but the last event (the rest: 1970, or now)
    assert pruned is not None and pruned["deleted"] == {"events": 3} and pruned["carried"] == 3  # a run, 2 steps
    assert journal.prune(before=1.9e9, now=2e9 + 2) is None  # nothing older left
    journal.close()
    report = check(path)
    assert report.problems == [] and report.first > 1
    assert report.starts_after == pruned["hash"]
    assert report.rows == 1 + 1 + 2  # the later event; the run and its steps stay
    with contextlib.closing(open_readonly(path)) as db:
        kinds = [entry[2] for entry in entries(db)]
    assert kinds == ["events", "runs", "steps", "steps", "checkpoint"]


def test_a_row_deleted_on_purpose_verifies_and_its_entries_are_pruned_with_nothing_carried(tmp_path: Path) -> None:
    """`Journal.delete` chains each row's deletion (body null): verify expects the row gone. Retention then drops
    those entries like any other and carries nothing forward for the row (the steps stay)."""
    path = tmp_path / "j.sqlite"
    journal = written(path)
    assert journal.delete("runs", "service = ?", ("payroll",), 9.0) == 1
    assert journal.delete("runs", "service = ?", ("payroll",), 9.5) == 0
    assert check(path).problems == []
    with journal.transaction(sync=False):
        journal.append(Event(EventKind.SITE_TRANSITION, 2e9, "payroll", "dorset", "much later", DOWN))
    pruned = journal.prune(before=1.9e9, now=2e9 + 1)
    assert pruned is not None and pruned["carried"] == 2  # the two steps; the deleted run: nothing
    journal.close()
    report = check(path)
    assert report.problems == [] and report.rows == 1 + 2


@needs_sqlite3
def test_after_pruning_a_changed_checkpoint_or_a_deleted_first_entry_is_named(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = written(path)
    with journal.transaction(sync=False):
        journal.append(Event(EventKind.SITE_TRANSITION, 2e9, "payroll", "dorset", "much later", DOWN))
    pruned = journal.prune(before=1.9e9, now=2e9 + 1)
    assert pruned is not None
    journal.close()
    first = pruned["through"] + 1
    tamper(path, f"DELETE FROM events WHERE seq = {first}")  # the later event: the first entry kept
    assert check(path).problems[0][1].startswith(f"entry {first + 1} does not start the chain")



def test_writes_kept_while_the_journal_was_full_are_chained_when_written(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = written(path)
    timers = FakeTimers()
    writer = JournalWriter(journal, Bus(), clock=lambda: 9.0, call_later=timers.call_later)
    runs = RunJournal(journal, writer)
    disk = FullJournal(journal)
    disk.fill()
    writer.emit(Event(EventKind.SITE_TRANSITION, 9.0, "payroll", "dorset", BIG, DOWN))
    timers.fire(writer.flush)  # fails: rolled back, the ledger's head with it
    runs.finish(1, RunResult.FAILED, 9.5, "kept while full")  # kept for the retry
    assert writer.refusal() is not None
    disk.free()
    timers.fire()
    assert writer.refusal() is None
    journal.close()
    report = check(path)
    assert report.problems == [] and report.rows == 3 + 1 + 1 + 2


def test_the_writer_prunes_by_journal_keep_at_its_first_commit(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = written(path)
    timers = FakeTimers()
    writer = JournalWriter(journal, Bus(), clock=lambda: 2e9, call_later=timers.call_later)
    writer.retention = 400 * 86400.0
    with capture_logs() as logs:
        writer.emit(Event(EventKind.SITE_TRANSITION, 2e9, "payroll", "dorset", "now", DOWN))
        timers.fire(writer.flush)
    (pruned,) = [line for line in logs if line["event"] == "journal_pruned"]
    assert pruned["deleted"] == {"events": 3} and pruned["carried"] == 3
    journal.close()
    assert check(path).problems == []


def test_the_head_of_a_period_is_the_last_entry_before_its_end(tmp_path: Path) -> None:
    written(tmp_path / "j.sqlite").close()
    with contextlib.closing(open_readonly(tmp_path / "j.sqlite")) as db:
        third = sealed_hash(db, 3)
        assert head_at(db, 2.5) == (3, third)  # genesis is stamped now; events 1 and 2 are entries 2 and 3
        assert head_at(db, 0.5) is None


@pytest.mark.parametrize("values", [
    (17, 1.8e9 + 0.05, "site_transition", "payroll", "dorset", 'a "quoted" reason, ünïcode \\ \n', '{"from": "up"}'),
    (1, 3.0, "service_status", "payroll", None, "", "{}"),
    (2, 1e-7, "journal_gap", None, None, "\u2028 and \x00", "[]"),
])
def test_an_events_row_written_out_is_its_canonical_json(values: tuple[object, ...]) -> None:
    row_id, at, kind, service, site, reason, data = values
    expected = canonical({"id": row_id, "at": at, "kind": kind, "service": service, "site": site, "reason": reason,
                          "data": data})
    assert event_body(row_id, at, kind, service, site, reason, data) == expected  # type: ignore[arg-type]
