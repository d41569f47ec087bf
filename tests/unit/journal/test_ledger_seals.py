"""Events entries are hashed when sealed (bcd.journal.ledger), on a real SQLite file: a commit seals them once they are
old enough, a rolled-back transaction forgets its seal, a daemon killed before sealing leaves entries that the
next open seals as found, a journal written before seals (hashes in the events rows) goes on verifying, and a
check names a deleted seal and entries left unsealed too long."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bcd.events import Event, EventKind, SiteTransition
from bcd.journal import Journal
from bcd.journal import ledger as ledger_module
from bcd.journal.ledger import GENESIS, chain_hash, event_entry, seal_hashes, sealed_hash
from bcd.journal.ledger_check import UNSEALED_GRACE, Report, check_database, export, open_readonly

DOWN = SiteTransition("up", "down")


def event(n: int) -> Event:
    return Event(EventKind.SITE_TRANSITION, float(n), "payroll", "dorset", f"change {n}", DOWN)


def check(path: Path, now: float | None = None) -> Report:
    with contextlib.closing(open_readonly(path)) as db:
        return check_database(db, now)


def seals(path: Path) -> list[tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT first, seq FROM seals ORDER BY seq").fetchall()


def test_a_commit_seals_the_waiting_entries_once_they_are_old_enough(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.ledger is not None
    journal.append(event(1))
    journal.append(event(2))
    assert journal.ledger.unsealed == 2 and seals(tmp_path / "j.sqlite") == []  # younger than SEAL_EVERY
    monkeypatch.setattr(ledger_module, "SEAL_EVERY", 0.0)
    journal.append(event(3))
    assert journal.ledger.unsealed == 0 and seals(tmp_path / "j.sqlite") == [(2, 4)]  # one row for the three
    journal.close()
    assert check(tmp_path / "j.sqlite").problems == []


def test_a_full_batch_is_sealed_at_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    with journal.transaction(sync=False):
        journal.append_events([event(n) for n in range(ledger_module.SEAL_MAX)])
    assert journal.ledger is not None and journal.ledger.unsealed == 0
    journal.close()
    assert seals(tmp_path / "j.sqlite") == [(2, ledger_module.SEAL_MAX + 1)]


def test_a_rolled_back_transaction_forgets_what_it_wrote_and_sealed(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.ledger is not None
    journal.append(event(1))
    with pytest.raises(RuntimeError), journal.transaction():
        journal.append(event(2))
        journal.ledger.seal()
        raise RuntimeError("the commit never comes")
    assert journal.ledger.unsealed == 1 and journal.ledger.next_seq == 3
    journal.append(event(3))  # takes the seq and id the rolled-back event had
    journal.close()
    assert [e.reason for e in Journal(tmp_path / "j.sqlite").events()] == ["change 1", "change 3"]
    assert check(tmp_path / "j.sqlite").problems == []


KILLED = """
import os, sys
from bcd.events import Event, EventKind, SiteTransition
from bcd.journal import Journal
journal = Journal(sys.argv[1])
for n in range(5):
    journal.append(Event(EventKind.SITE_TRANSITION, 1.8e9 + n, "payroll", "dorset", f"change {n}",
                         SiteTransition("up", "down")))
os.kill(os.getpid(), 9)
"""


def test_entries_a_killed_daemon_left_unsealed_check_while_recent_and_the_next_open_seals_them(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    killed = subprocess.run([sys.executable, "-c", KILLED, str(path)], timeout=60, check=False)
    assert killed.returncode == -9
    recent = check(path, now=1.8e9 + 10)
    assert recent.problems == [] and recent.unsealed == 5 and recent.head[0] == 1  # the genesis: nothing sealed
    with contextlib.closing(open_readonly(path)) as db, open(tmp_path / "export.jsonl", "w") as out:
        assert export(db, out) == 1  # what has a hash: the genesis entry
    late = check(path, now=1.8e9 + UNSEALED_GRACE + 10)
    assert late.problems == [(2, "entries 2..6 were never sealed (the oldest from 2027-01-15T08:00:00Z): the daemon "
                                 "died before sealing them and has not started since (its next start seals them as "
                                 "found), or their seal was deleted")]
    with capture_logs() as logs:
        Journal(path).close()
    assert [line["entries"] for line in logs if line["event"] == "journal_chain_sealed_at_start"] == [5]
    assert seals(path) == [(2, 6)]
    assert check(path).problems == []


def test_a_deleted_seal_is_named(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    for n in (1, 2):
        journal.append(event(n))
    journal.seal()
    journal.append(event(3))
    journal.close()
    assert seals(path) == [(2, 3), (4, 4)]
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DELETE FROM seals WHERE first = 2")
        db.commit()
    assert [text for _, text in check(path).problems] == [
        "entries 2..3 were not sealed although later entries were: their seal was deleted"]


def test_a_journal_whose_events_carry_their_hashes_verifies_and_goes_on_with_seals(tmp_path: Path) -> None:
    """The bcd before seals wrote each events entry's hash into its row: such rows check as they are, and the
    chain goes on from the newest of them."""
    path = tmp_path / "j.sqlite"
    Journal(path).close()  # the genesis entry, seq 1
    with contextlib.closing(sqlite3.connect(path)) as db:
        (prev,) = db.execute("SELECT hash FROM ledger WHERE seq = 1").fetchone()
        assert prev != GENESIS
        for row_id, seq in ((1, 2), (2, 3)):  # written as that bcd wrote them
            row = (row_id, float(row_id), "site_transition", "payroll", "dorset", f"old {row_id}", "{}")
            prev = chain_hash(prev, event_entry(seq, *row))
            db.execute("INSERT INTO events (id, at, kind, service, site, reason, data, seq, hash) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*row, seq, prev))
        db.commit()
    journal = Journal(path)
    assert journal.ledger is not None and journal.ledger.head == (3, prev)
    journal.append(event(3))
    journal.close()
    assert seals(path) == [(4, 4)]
    with contextlib.closing(open_readonly(path)) as db:
        assert sealed_hash(db, 4) is not None
    assert check(path).problems == []
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE events SET reason = 'tampered' WHERE id = 2")
        db.commit()
    assert check(path).problems[0] == (3, "entry 3 (events 2) was changed: its hash does not match its content")


@pytest.mark.parametrize("row", [
    (17, 1.8e9 + 0.05, "site_transition", "payroll", "dorset", 'a "quoted" reason, ünïcode \\ \n', '{"from": "up"}'),
    (1, 3.0, "service_status", "payroll", None, "", "{}"),
    (2, 1e-7, "journal_gap", None, None, "\u2028 and \x00", "[]"),
    (3, 5, "journal_gap", None, None, "an integer time", "[]"),
])
def test_a_seal_hashes_each_entry_as_its_canonical_json_after_the_previous_hash(
        tmp_path: Path, row: tuple[object, ...]) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.ledger is not None
    seq, prev = journal.ledger.head
    journal.ledger.events_written([(*row, seq + 1), (*row, seq + 2)])
    with journal.transaction():
        journal.ledger.seal()
    first = chain_hash(prev, event_entry(seq + 1, *row))  # type: ignore[arg-type]
    assert journal.ledger.head == (seq + 2, chain_hash(first, event_entry(seq + 2, *row)))  # type: ignore[arg-type]
    assert seal_hashes(prev, [(*row, seq + 1), (*row, seq + 2)]) == [first, journal.ledger.head[1]]  # what benches time
    journal.close()
