"""Entries kept in the events rows themselves, plan runs in the chain, and a journal written before either: a
real SQLite file written by the bcd of before (tests/data/journals, made with that code) goes on verifying once
this one has opened it, and rows changed with the `sqlite3` command are named."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

from structlog.testing import capture_logs

from bcd.events import Event, EventKind
from bcd.journal import Journal, RunJournal, RunRecord
from bcd.journal.ledger import entry_text, event_body, event_entry, sealed_hash
from bcd.journal.ledger_check import check_database, entries, open_readonly
from bcd.plans.model import Move, MoveState, PlanRun, PlanState
from bcd.plans.records import PlanJournal
from tests.unit.journal.test_ledger import DOWN, check, needs_sqlite3, tamper

BEFORE = Path(__file__).parents[2] / "data" / "journals" / "before-events-carried-entries.sqlite"


def plan_run(state: PlanState, move: MoveState, ended: float | None = None) -> PlanRun:
    return PlanRun(0, "evacuate-dorset", "dorset", "hampshire", "olive", "drill", False, 10.0, state,
                   (Move("payroll", 1, move),), ended=ended)


def test_an_event_carries_its_own_entry_and_the_chain_goes_on_through_the_ledger_table(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    first = journal.append(Event(EventKind.SITE_TRANSITION, 1.5, "payroll", "dorset", "change", DOWN))
    RunJournal(journal).create(RunRecord(0, "payroll", "failover", "failover", "auto", "down", "dorset", "hampshire",
                                         False, False, {}, 2.0, None, "running", "", None, None, None))
    second = journal.append(Event(EventKind.SITE_TRANSITION, 3.5, "payroll", "dorset", "again", DOWN))
    rows = journal.execute("SELECT id, seq FROM events ORDER BY id").fetchall()
    kept = journal.execute("SELECT seq, kind FROM ledger ORDER BY seq").fetchall()
    journal.close()
    assert [row[:2] for row in rows] == [(first.id, 2), (second.id, 4)]  # genesis is 1, the run 3
    assert kept == [(1, "genesis"), (3, "runs")]  # no second row for an event
    with contextlib.closing(open_readonly(tmp_path / "j.sqlite")) as db:
        chain = list(entries(db))
        report = check_database(db)
        second_hash = sealed_hash(db, 4)
    assert [entry[2] for entry in chain] == ["genesis", "events", "runs", "events"]
    assert report.problems == [] and report.rows == 3 and report.head == (4, second_hash)


def test_an_events_entry_written_out_is_the_entry_text_of_its_body() -> None:
    values = (17, 1.8e9 + 0.05, "site_transition", "payroll", None, 'a "quoted" reason, ünïcode \\ \n', "{}")
    assert event_entry(42, *values) == entry_text(42, values[1], "events", "17", event_body(*values))  # type: ignore[arg-type]


@needs_sqlite3
def test_a_journal_written_before_events_carried_their_entries_verifies_and_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    shutil.copyfile(BEFORE, path)
    assert [text for _, text in check(path).problems] == [  # as the old bcd left it, events' entries in the ledger
        "plan_runs row 1 has no ledger entry (written outside bcd, or by a bcd that did not chain plan_runs yet: the "
        "daemon adopts those when it starts)"]
    with capture_logs() as logs:
        journal = Journal(path)
        PlanJournal(journal)  # plan runs were not chained then: the one there is adopted
    (adopted,) = [line for line in logs if line["event"] == "journal_chain_adopted"]
    assert adopted["rows"] == 1
    journal.append(Event(EventKind.SITE_TRANSITION, 20.0, "payroll", "dorset", "after the upgrade", DOWN))
    journal.close()
    report = check(path)
    assert report.problems == [] and report.entries == 9 + 2 + 1  # old ones, adopted + its row, the new event
    assert report.rows == 3 + 1 + 1 + 1 + 1  # old events, run, step, plan run, new event
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT seq FROM events WHERE id = 4").fetchone() == (12,)
    tamper(path, "UPDATE events SET reason = 'nothing happened' WHERE id = 2")  # written by the old bcd
    assert check(path).problems[0][1] == (
        "events row 2 differs from entry 3 (reason: 'change 1' in the ledger, 'nothing happened' in the row)")
    tamper(path, "UPDATE events SET reason = 'change 1' WHERE id = 2")
    tamper(path, "UPDATE events SET reason = 'before the upgrade' WHERE id = 4")  # written by this one
    assert check(path).problems[0][1] == "entry 12 (events 4) was changed: its hash does not match its content"


@needs_sqlite3
def test_plan_runs_are_chained_and_a_changed_or_deleted_plan_run_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    journal = Journal(path)
    plans = PlanJournal(journal)
    plans.clock = lambda: 12.0
    run = plans.create(plan_run(PlanState.RUNNING, MoveState.MOVING))
    plans.save(replace(plan_run(PlanState.SUCCEEDED, MoveState.MOVED, ended=11.0), id=run.id))
    (last,) = journal.execute("SELECT max(seq) FROM ledger WHERE kind = 'plan_runs'").fetchone()
    journal.close()
    report = check(path)
    assert report.problems == [] and report.rows == 1
    tamper(path, "UPDATE plan_runs SET state = 'failed'")
    assert check(path).problems[0][1] == (
        f"plan_runs row 1 differs from entry {last} (state: 'succeeded' in the ledger, 'failed' in the row)")
    tamper(path, "DELETE FROM plan_runs")
    assert check(path).problems[0][1] == f"plan_runs row 1 is missing (entry {last} records it)"


def test_pruning_a_journal_written_before_the_upgrade_keeps_what_remains_verifiable(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    shutil.copyfile(BEFORE, path)
    journal = Journal(path)
    PlanJournal(journal)
    journal.append(Event(EventKind.SITE_TRANSITION, 1.9e9, "payroll", "dorset", "early", DOWN))
    journal.append(Event(EventKind.SITE_TRANSITION, 2e9, "payroll", "dorset", "much later", DOWN))
    pruned = journal.prune(before=1.95e9, now=2e9 + 1)  # the old events (their entries in the ledger table) and
    journal.close()                                     # the one in its own row before 1.95e9 go
    assert pruned is not None and pruned["deleted"] == {"events": 4} and pruned["carried"] == 3  # run, step, plan
    report = check(path)
    assert report.problems == [] and report.starts_after == pruned["hash"]
    assert report.rows == 1 + 1 + 1 + 1  # the later event, the run, its step, the plan run
