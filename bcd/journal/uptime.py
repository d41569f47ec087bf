"""When the daemon ran: one row per start in the journal's `daemon_spans`, so a continuity report can show the
daemon's own downtime as unobserved rather than as `up` (bcd.report reads it).

A span is `started` (the start), `alive` (its last heartbeat, every ALIVE_INTERVAL) and `stopped` (a clean stop;
NULL after a crash or while running). After a crash the span ends at its last heartbeat: at most ALIVE_INTERVAL
of observed time is left out, never counted twice. The table is not chained (a heartbeat a minute would add a
ledger entry a minute): each start is chained already as its `config` entry (bcd.config_record, by `start`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable

import structlog

from bcd.journal import Journal

log = structlog.get_logger("bcd.uptime")

ALIVE_INTERVAL = 60.0
TABLE = "daemon_spans"
SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (started REAL PRIMARY KEY, alive REAL NOT NULL, stopped REAL, "
          "pid INTEGER NOT NULL)")


class Uptime:
    """The daemon's span in the journal: `run` is its lifetime part (bcd.lifetime)."""

    def __init__(self, journal: Journal, clock: Callable[[], float] = time.time,
                 interval: float = ALIVE_INTERVAL, flush: Callable[[], object] | None = None) -> None:
        """`flush`: the journal's group commit, flushed when the part stops, before the stop is recorded."""
        self._journal = journal
        self._flush = flush
        self._clock = clock
        self._interval = interval
        self._started: float | None = None

    async def run(self, ready: asyncio.Event) -> None:
        """Record the start, a heartbeat every interval, and the stop when cancelled."""
        self._started = self._clock()
        self._write("start", f"INSERT OR REPLACE INTO {TABLE} VALUES (?, ?, NULL, ?)",
                    (self._started, self._started, os.getpid()), schema=True)
        ready.set()
        try:
            while True:
                await asyncio.sleep(self._interval)
                self._write("alive", f"UPDATE {TABLE} SET alive = ? WHERE started = ?", (self._clock(), self._started))
        finally:
            try:
                if self._flush is not None:
                    self._flush()  # the last events first: they happened while the daemon ran
            finally:
                now = self._clock()
                self._write("stop", f"UPDATE {TABLE} SET alive = ?, stopped = ? WHERE started = ?",
                            (now, now, self._started))

    def _write(self, what: str, sql: str, params: tuple[object, ...], *, schema: bool = False) -> None:
        """One committed write; a journal that cannot be written costs the report some observed time, never
        the daemon its run (logged)."""
        try:
            if schema:
                self._journal.execute(SCHEMA)
            self._journal.execute(sql, params)
        except sqlite3.Error as exc:
            log.warning("uptime_not_journaled", what=what, error=str(exc),
                        hint="a continuity report shows this time as unobserved")
