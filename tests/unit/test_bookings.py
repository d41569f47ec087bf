"""bcd.bookings: the lone instance's store on a real SQLite journal — bookings survive a reopen (a restart), a
change is a compare-and-swap (a stale copy changes nothing), a taken id is refused; bookings round-trip as JSON;
bookings are chained in the journal's ledger, so a changed booking is named; those over are pruned as deleted on
purpose, and the journal still verifies."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import replace
from pathlib import Path

from bcd.bookings import Booking, BookingKind, BookingState, LocalBookings, decode, over
from bcd.journal import Journal
from bcd.journal.ledger_check import check_database, open_readonly

WINDOW = Booking("0a1b2c3d", BookingKind.MAINTENANCE, 2000.0, "olive", "new switch", 1000.0, service="payroll",
                 site="dorset", sites=("dorset",), duration=3600.0, name="payroll.dorset@x")
RUN = Booking("9f8e7d6c", BookingKind.FAILOVER, 3000.0, "olive", "planned move", 1000.0, service="payroll",
              to="hampshire")


async def test_bookings_survive_a_reopen_of_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    store = LocalBookings(journal)
    assert await store.add(WINDOW) and await store.add(RUN)
    started = replace(RUN, state=BookingState.STARTED, taken_by="bcd", run_id=4)
    assert await store.change(RUN, started)
    journal.close()
    again = LocalBookings(Journal(tmp_path / "bcd.sqlite"))
    assert sorted(again.all(), key=lambda b: b.at) == [WINDOW, started]
    assert again.get("9f8e7d6c") == started and again.get("nope") is None


async def test_a_change_from_a_stale_copy_changes_nothing_and_a_taken_id_is_refused(tmp_path: Path) -> None:
    store = LocalBookings(Journal(tmp_path / "bcd.sqlite"))
    assert await store.add(RUN)
    version = store.version
    taken = replace(RUN, state=BookingState.STARTING, taken_by="dorset")
    assert await store.change(RUN, taken)
    assert not await store.change(RUN, replace(RUN, state=BookingState.CANCELLED))  # RUN is stale now
    assert store.get(RUN.id) == taken and store.version == version + 1
    assert not await store.add(replace(WINDOW, id=RUN.id))


def test_a_booking_round_trips_and_junk_is_no_booking() -> None:
    assert decode(WINDOW.encode()) == WINDOW
    assert decode(RUN.encode()) == RUN
    assert decode(b"[1, 2]") is None and decode(b"{\"id\": 1}") is None and decode(b"\xff") is None


async def test_bookings_are_chained_and_a_booking_changed_outside_bcd_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    journal = Journal(path)
    store = LocalBookings(journal)
    assert await store.add(RUN)
    assert await store.change(RUN, replace(RUN, state=BookingState.CANCELLED, detail="cancelled by olive"))
    journal.close()
    with contextlib.closing(open_readonly(path)) as db:
        assert check_database(db).problems == []
    with contextlib.closing(sqlite3.connect(path)) as db:  # a forced run, moved to another time, by hand
        db.execute("UPDATE bookings SET at = 4000.0 WHERE id = '9f8e7d6c'")
        db.commit()
    with contextlib.closing(open_readonly(path)) as db:
        (problem,) = check_database(db).problems
    assert problem[1] == f"bookings row 9f8e7d6c differs from entry {problem[0]} (at: 3000.0 in the ledger, 4000.0 in the row)"


def test_a_booking_is_over_once_decided_or_once_its_window_has_ended() -> None:
    assert over(WINDOW) == 5600.0  # booked: over at the window's end
    assert over(RUN) is None  # to come
    assert over(replace(RUN, state=BookingState.STARTING, decided_at=3000.0)) is None  # an operator looks at it
    for state in (BookingState.STARTED, BookingState.REFUSED, BookingState.MISSED, BookingState.INTERRUPTED,
                  BookingState.CANCELLED):
        assert over(replace(RUN, state=state, decided_at=3001.0)) == 3001.0, state
    assert over(replace(WINDOW, state=BookingState.CANCELLED, decided_at=2500.0)) == 2500.0  # cut short


async def test_a_lone_instance_prunes_its_bookings_as_deleted_on_purpose_and_verify_agrees(tmp_path: Path) -> None:
    """Rows of bookings over before the cut are deleted with a ledger entry each saying so: the journal still
    verifies, the others stay, a reopen keeps the pruning; a deleted row written back by hand is named."""
    path = tmp_path / "bcd.sqlite"
    journal = Journal(path)
    store = LocalBookings(journal)
    old = replace(RUN, state=BookingState.STARTED, decided_at=3001.0)
    assert await store.add(old) and await store.add(WINDOW)  # the window: over at 5600
    assert await store.add(replace(RUN, id="00000005", at=9000.0))  # to come
    version = store.version
    assert await store.prune(5000.0) == 1 and store.version == version + 1
    assert sorted(b.id for b in store.all()) == ["00000005", WINDOW.id]
    assert await store.prune(5000.0) == 0
    journal.close()
    assert sorted(b.id for b in LocalBookings(Journal(path)).all()) == ["00000005", WINDOW.id]
    with contextlib.closing(open_readonly(path)) as db:
        report = check_database(db)
    assert report.problems == [] and report.rows == 2
    with contextlib.closing(sqlite3.connect(path)) as db:  # written back outside bcd
        db.execute("INSERT INTO bookings (id, at, state, data) VALUES (?, ?, ?, ?)",
                   (old.id, old.at, old.state.value, old.encode().decode()))
        db.commit()
    with contextlib.closing(open_readonly(path)) as db:
        (problem,) = check_database(db).problems
    assert problem[1] == (f"bookings row {old.id} is there although entry {problem[0]} records it deleted (written "
                          "again outside bcd)")
