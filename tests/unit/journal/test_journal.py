"""The SQLite journal on a real file: state round-trips, events, all-or-nothing transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bcd.events import Event, EventKind, ServiceStatusChanged, SiteTransition
from bcd.journal import Journal, RunJournal, RunRecord, SavedService, SavedSite
from bcd.model import RunKind, RunResult

DOWN = SiteTransition("up", "down")


def test_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bcd.sqlite"
    journal = Journal(path)
    site = SavedSite("payroll", "dorset", "down", False, None, "", 10.0, "3 consecutive failures")
    journal.save_site(site)
    journal.save_service(SavedService("payroll", "failover_needed", "dorset", 11.0, "active down"))
    journal.close()
    again = Journal(path)
    assert again.sites() == [site]
    assert again.services() == [SavedService("payroll", "failover_needed", "dorset", 11.0, "active down")]
    assert again.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert again.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_events_get_ids_and_filter_by_service(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    first = journal.append(Event(EventKind.SITE_TRANSITION, 1.0, "payroll", "dorset", "down", DOWN))
    journal.append(Event(EventKind.SITE_TRANSITION, 2.0, "library", "dorset", "down", DOWN))
    third = journal.append(Event(EventKind.SERVICE_STATUS, 3.0, "payroll", None, "failover needed",
                                 ServiceStatusChanged("ok", "failover_needed", "dorset", None)))
    assert first.id is not None and third.id is not None and third.id > first.id
    assert [e.reason for e in journal.events(service="payroll")] == ["down", "failover needed"]
    assert [e.id for e in journal.events(after=first.id)] == [first.id + 1, third.id]
    assert journal.events(service="payroll")[0].data == DOWN


def test_a_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    with pytest.raises(sqlite3.OperationalError), journal.transaction():
        journal.append(Event(EventKind.SITE_TRANSITION, 1.0, "svc", "a", "kept?", DOWN))
        journal.execute("INSERT INTO no_such_table VALUES (1)")
    assert journal.events() == []
    with journal.transaction():
        journal.append(Event(EventKind.SITE_TRANSITION, 1.0, "svc", "a", "kept", DOWN))
    assert [e.reason for e in journal.events()] == ["kept"]


def test_an_unsynced_transaction_commits_and_restores_full_sync(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    with journal.transaction(sync=False):
        assert journal.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL inside
        journal.append(Event(EventKind.SITE_TRANSITION, 1.0, "svc", "a", "health", DOWN))
    assert journal.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again for runs and steps
    reopened = Journal(tmp_path / "j.sqlite")
    assert [e.reason for e in reopened.events()] == ["health"]


def test_a_run_record_carries_its_kind_and_result_as_enums_through_the_journal(tmp_path: Path) -> None:
    runs = RunJournal(Journal(tmp_path / "j.sqlite"))
    record = RunRecord(
        id=0, service="payroll", runbook="move", kind=RunKind.FAILBACK, trigger="auto", reason="home is up",
        from_site="hampshire", to_site="dorset", dry_run=False, forced=False, evidence={}, started=1.0, ended=None,
        result=RunResult.RUNNING, detail="", acknowledged_by=None, detected_at=None, verified_at=None,
    )
    run_id = runs.create(record)
    runs.finish(run_id, RunResult.ROLLED_BACK, 2.0, "step 1 failed")
    read = runs.get(run_id)
    assert read is not None
    assert (read.kind, read.result) == (RunKind.FAILBACK, RunResult.ROLLED_BACK)
    assert type(read.kind) is RunKind and type(read.result) is RunResult
    assert (read.to_dict()["kind"], read.to_dict()["result"]) == ("failback", "rolled_back")


def test_a_run_record_takes_strings_for_its_enums_and_refuses_unknown_ones() -> None:
    fields = ("payroll", "move", "failover", "auto", "r", "dorset", "hampshire", False, False, {}, 1.0, None)
    assert RunRecord(0, *fields, "succeeded", "", None, None, None).kind is RunKind.FAILOVER
    with pytest.raises(ValueError, match="'finished' is not a valid RunResult"):
        RunRecord(0, *fields, "finished", "", None, None, None)
