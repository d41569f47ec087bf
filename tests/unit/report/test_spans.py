"""The daemon's spans: the time of a stretch in them (what is observed), and the spans the daemon journals."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from bcd.journal import Journal
from bcd.journal.ledger_check import open_readonly
from bcd.journal.uptime import SCHEMA, Uptime
from bcd.report.source import Spans, spans

SPANS = Spans(((0.0, 10.0), (20.0, 30.0), (40.0, 50.0)))


@pytest.mark.parametrize(("a", "b", "covered"), [
    (2, 8, 6), (0, 10, 10), (5, 25, 10), (12, 18, 0), (15, 25, 5), (-5, 60, 30), (25, 45, 10), (50, 60, 0),
    (8, 8, 0), (9, 5, 0),
])
def test_covered_is_the_time_of_a_stretch_within_the_spans(a: float, b: float, covered: float) -> None:
    assert SPANS.covered(a, b) == covered
    assert SPANS.covered(a, b) == covered  # again: the span found last is tried first


def test_no_spans_means_all_time_is_observed() -> None:
    assert Spans(None).covered(5, 25) == 20


async def test_the_daemon_journals_its_start_heartbeats_and_stop(tmp_path: Path) -> None:
    now = [1000.0]
    journal = Journal(tmp_path / "bcd.sqlite")
    uptime = Uptime(journal, clock=lambda: now[0], interval=0.01)
    ready = asyncio.Event()
    task = asyncio.create_task(uptime.run(ready))
    await ready.wait()
    now[0] = 1060.0
    with contextlib.closing(open_readonly(tmp_path / "bcd.sqlite")) as db:
        assert spans(db, 0, 2000, now=1100.0).spans == ((1000.0, 1100.0),)  # running: counted up to now
        for _ in range(200):  # the next heartbeat
            if db.execute("SELECT alive FROM daemon_spans").fetchone()[0] == 1060.0:
                break
            await asyncio.sleep(0.01)
        assert spans(db, 0, 2000, now=1500.0).spans == ((1000.0, 1060.0),)  # silent since: ends at its heartbeat
    now[0] = 1090.0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    journal.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "bcd.sqlite")) as db:
        assert db.execute("SELECT started, alive, stopped FROM daemon_spans").fetchall() == [(1000.0, 1090.0, 1090.0)]


def test_a_span_cut_by_a_crash_ends_at_its_heartbeat_once_a_later_start_is_journaled(tmp_path: Path) -> None:
    """kill -9 at 1090 (last heartbeat 1060), started again at 1100: the time between is unobserved even when the
    report is made within two heartbeats of the dead span's last one (it is not the running daemon's)."""
    path = tmp_path / "bcd.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(SCHEMA)
        db.executemany("INSERT INTO daemon_spans VALUES (?, ?, ?, ?)",
                       [(1000.0, 1060.0, None, 1), (1100.0, 1110.0, None, 2)])
        db.commit()
    with contextlib.closing(open_readonly(path)) as db:
        assert spans(db, 0, 2000, now=1120.0).spans == ((1000.0, 1060.0), (1100.0, 1120.0))
        assert spans(db, 0, 1080, now=1120.0).spans == ((1000.0, 1060.0),)  # the later start after the period
