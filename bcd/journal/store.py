"""The SQLite store under `state_dir`: current health and status, and the event journal.

WAL mode with synchronous=FULL: a committed row survives kill -9 and power loss (runs and steps are committed
without waiting, then made durable by a group commit, `bcd.journal.sync`: a step's start before the step runs,
a run's end soon after it). Writes happen on
transitions and decisions (rare), never per observation; the engine groups the writes of one event-loop
iteration into one transaction (group commit), so a burst of transitions costs one fsync, not one each.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from bcd.events import Event, EventKind, payload_from_json, payload_json
from bcd.journal.ledger import HASHING, Ledger, Write
from bcd.journal.ledger import prune as ledger_prune
from bcd.journal.schema import ADDED_COLUMNS, RUNS_SCHEMA, SCHEMA
from bcd.journal.sync import WalSync
from bcd.state_dir import not_writable, open_database

log = structlog.get_logger("bcd.journal")


class JournalWriteError(Exception):
    """The journal cannot be written (disk full, I/O error, read-only): what needed it is refused (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class SavedSite:
    service: str
    site: str
    base: str
    flapping: bool
    maintenance_until: float | None
    maintenance_reason: str
    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class SavedService:
    service: str
    status: str
    active: str
    since: float
    reason: str


class Journal:
    """One connection, used from the event loop thread only. Every change to a covered table is chained in
    the ledger (bcd.journal.ledger) in the same transaction; `chained=False` only to measure what that costs (bench)."""

    def __init__(self, path: str | Path, *, chained: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_database(self.path)  # StateDirError if it is corrupt or cannot be written
        self.syncs = WalSync(self.path)  # what was committed with sync=False is made durable through it
        self.create([*SCHEMA.split(";"), *RUNS_SCHEMA.split(";")])
        for table, column, definition in ADDED_COLUMNS:
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in present:
                self.create([f"ALTER TABLE {table} ADD COLUMN {column} {definition}"])
        self.ledger: Ledger | None = None
        self._next_event: int | None = None  # the next events row's id (AUTOINCREMENT's), known before the INSERT
        if chained:
            self.ledger = self._start_chain(clock)

    def _start_chain(self, clock: Callable[[], float]) -> Ledger:
        """The ledger (`clock`: when its seals are due); a journal without one (new, or from before the chain)
        starts it with a genesis entry."""
        try:
            ledger = self.ledger = Ledger(self._db, clock)
            if not ledger.empty:
                self._seal_found(ledger)
                log.info("journal_chain_head", journal=str(self.path), seq=ledger.head[0], hash=ledger.head[1],
                         hashing=HASHING)
                return ledger
            with self.transaction():
                had = self._db.execute("SELECT 1 FROM events UNION ALL SELECT 1 FROM runs LIMIT 1").fetchone()
                reason = ("rows written before the chain existed were adopted as found: their earlier history "
                          "is not proven" if had else "a new journal")
                adopted = ledger.adopt(time.time(), reason)
        except sqlite3.Error as exc:
            self._db.close()
            raise not_writable(self.path, exc) from exc
        log.info("journal_chain_started", journal=str(self.path), reason=reason, adopted=adopted, hashing=HASHING)
        return ledger

    def create(self, statements: Iterable[str]) -> None:
        """Run schema statements at start. A disk with room for the open's check but not for the schema
        raises StateDirError (one line, exit 2), not sqlite3's error."""
        try:
            for statement in statements:
                if statement.strip():
                    self._db.execute(statement)
        except sqlite3.Error as exc:
            self._db.close()
            raise not_writable(self.path, exc) from exc

    def seal(self) -> None:
        """Seal the events entries that wait for their hashes (ledger.py), committed without waiting for the disk
        (like the events themselves)."""
        if self.ledger is not None and self.ledger.unsealed:
            with self.transaction(sync=False):
                self.ledger.seal()

    def _seal_found(self, ledger: Ledger) -> None:
        """Seal the events entries a daemon that stopped without closing the journal left unsealed."""
        if ledger.unsealed:
            count = ledger.unsealed
            self.seal()
            log.warning("journal_chain_sealed_at_start", journal=str(self.path), entries=count,
                        hint="the daemon stopped before sealing its newest events; they were sealed as found")

    def close(self) -> None:
        """Seal what waits (ledger.py), then close; a seal that cannot be written now is made at the next open."""
        if self.ledger is not None and self.ledger.unsealed:
            try:
                self.seal()
            except sqlite3.Error as exc:
                log.warning("journal_seal_failed", journal=str(self.path), entries=self.ledger.unsealed,
                            error=str(exc), hint="they are sealed when the journal is opened next")
        self._db.close()

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is open (a `transaction` begun now joins it)."""
        return self._db.in_transaction

    @contextmanager
    def transaction(self, *, sync: bool = True) -> Iterator[None]:
        """Group writes into one commit: all or nothing. `sync=False` commits without waiting for the disk
        (WAL, synchronous=NORMAL): the commit survives a crash of the process (kill -9), not a power cut.
        Health state and its events use that — probes re-derive them — while runs and steps always wait.
        Inside another transaction it joins that one. A rollback rolls the ledger's head back too."""
        if self.in_transaction:
            yield
            return
        mark = self.ledger.mark() if self.ledger is not None else None
        if not sync:
            self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            if self.ledger is not None:
                self.ledger.flush()
            self._db.execute("COMMIT")
            if not sync:
                self.syncs.commits += 1
        except BaseException:
            if self._db.in_transaction:  # a failed COMMIT leaves it open; SQLITE_FULL may have ended it already
                self._db.execute("ROLLBACK")
            if self.ledger is not None and mark is not None:
                self.ledger.rollback(mark)
            self._next_event = None
            raise
        finally:
            if not sync:
                self._db.execute("PRAGMA synchronous=FULL")

    def probe_write(self, now: float) -> None:
        """One small committed write, to learn whether the journal can be written again (raises sqlite3.Error).
        Its one-row table is made here, not with the schema: opening a journal on a full disk must not need it."""
        self._db.execute("CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at REAL)")
        self._db.execute("INSERT OR REPLACE INTO write_probe VALUES (1, ?)", (now,))

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

    def apply(self, write: Write, at: float, *, sync: bool = True) -> sqlite3.Cursor:
        """Make a change to a covered table and chain the rows it touched, in one transaction (`sync`: see
        `transaction`)."""
        with self.transaction(sync=sync):
            cursor = self._db.execute(write.sql, write.params)
            if self.ledger is not None:
                if write.where is None:
                    self.ledger.rows(at, write.table, "rowid = ?", (cursor.lastrowid,))
                else:
                    self.ledger.rows(at, write.table, write.where, write.where_params)
        return cursor

    def delete(self, table: str, where: str, params: tuple[Any, ...], at: float) -> int:
        """Delete on purpose the rows of covered, updated table `table` that `where` selects, each chained as deleted
        (bcd.journal.ledger: `verify` then expects it gone), in one committed transaction; how many."""
        with self.transaction():
            if self.ledger is not None:
                self.ledger.deleted(at, table, where, params)
            count: int = self._db.execute(f"DELETE FROM {table} WHERE {where}", params).rowcount
        return count

    def prune(self, before: float, now: float) -> dict[str, Any] | None:
        """Retention (bcd.journal.ledger.prune), committed: the checkpoint's body, or None when nothing was pruned."""
        if self.ledger is None:
            return None
        with self.transaction():
            return ledger_prune(self._db, self.ledger, before, now)

    def cover(self, table: str) -> None:
        """A covered table (bcd.journal.ledger.COVERED) made by a plug-in: rows it holds from before the chain covered
        it are adopted now (bcd.journal.ledger.Ledger.cover), in their own transaction."""
        if self.ledger is None:
            return
        try:
            with self.transaction():
                adopted = self.ledger.cover(time.time(), table)
        except sqlite3.Error as exc:  # tried again at the next start; meanwhile `verify` names the rows
            log.warning("journal_chain_adopt_failed", journal=str(self.path), table=table, error=str(exc))
            return
        if adopted:
            log.info("journal_chain_adopted", journal=str(self.path), table=table, rows=adopted)

    def record(self, at: float, kind: str, ref: str, body: dict[str, Any]) -> None:
        """Chain an entry that is no table's row (a config load), committed at once."""
        if self.ledger is not None:
            with self.transaction():
                self.ledger.append(at, kind, ref, body)

    def sites(self) -> list[SavedSite]:
        rows = self._db.execute("SELECT * FROM site_health").fetchall()
        return [SavedSite(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], r[7]) for r in rows]

    def services(self) -> list[SavedService]:
        rows = self._db.execute("SELECT * FROM service_state").fetchall()
        return [SavedService(*row) for row in rows]

    def save_site(self, site: SavedSite) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO site_health VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (site.service, site.site, site.base, int(site.flapping), site.maintenance_until,
             site.maintenance_reason, site.since, site.reason),
        )

    def save_service(self, service: SavedService) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO service_state VALUES (?, ?, ?, ?, ?)",
            (service.service, service.status, service.active, service.since, service.reason),
        )

    def append(self, event: Event) -> Event:
        """Journal an event; returns it with its id."""
        return self.append_events([event])[0]

    def append_events(self, events: list[Event]) -> list[Event]:
        """Journal events in one statement (committed with the caller's transaction, or at once); returns them
        with their ids. Chained, each row carries its own entry: its `seq` (its hash: its seal's, ledger.py)."""
        with self.transaction():
            first = self._next_event
            if first is None:
                row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
                first = (row[0] if row else 0) + 1
            rows: list[tuple[Any, ...]]
            if self.ledger is None:
                rows = [(row_id, event.at, event.kind.value, event.service, event.site, event.reason,
                         json.dumps(payload_json(event.data))) for row_id, event in enumerate(events, first)]
                self._db.executemany(_INSERT_EVENT, rows)
            else:  # each row's seq follows the chain's; its hash comes with the next seal (bcd.journal.ledger)
                delta = self.ledger.next_seq - first
                rows = [(row_id, event.at, event.kind.value, event.service, event.site, event.reason,
                         json.dumps(payload_json(event.data)), row_id + delta)
                        for row_id, event in enumerate(events, first)]
                self._db.executemany(_INSERT_CHAINED_EVENT, rows)
                self.ledger.events_written(rows)
            self._next_event = first + len(rows)
        return [replace(event, id=row[0]) for event, row in zip(events, rows, strict=True)]

    def last_events(self, count: int, service: str | None = None) -> list[Event]:
        """The newest `count` events, oldest first."""
        sql = "SELECT id, at, kind, service, site, reason, data FROM events"
        params: tuple[Any, ...] = ()
        if service is not None:
            sql += " WHERE service = ?"
            params = (service,)
        rows = self._db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, count)).fetchall()
        return [_event(row) for row in reversed(rows)]

    def events(self, after: int = 0, service: str | None = None, limit: int = 100) -> list[Event]:
        sql = "SELECT id, at, kind, service, site, reason, data FROM events WHERE id > ?"
        params: list[Any] = [after]
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [_event(row) for row in rows]


_INSERT_EVENT = "INSERT INTO events (id, at, kind, service, site, reason, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_CHAINED_EVENT = ("INSERT INTO events (id, at, kind, service, site, reason, data, seq) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


def _event(row: tuple[Any, ...]) -> Event:
    """An event from its journal row: (id, at, kind, service, site, reason, the payload's JSON)."""
    kind = EventKind(row[2])
    return Event(kind, row[1], row[3], row[4], row[5], payload_from_json(kind, json.loads(row[6])), row[0])
