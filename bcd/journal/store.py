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
from typing import Any, Protocol

import structlog

from bcd.events import Event, EventKind, payload_from_json, payload_json
from bcd.journal.ledger import Ledger, Write
from bcd.journal.ledger import prune as ledger_prune
from bcd.journal.run_records import INTERRUPTED, RUN_FIELDS, RunRecord, StepRecord, run_columns, run_from_row
from bcd.journal.schema import ADDED_COLUMNS, RUNS_SCHEMA, SCHEMA
from bcd.journal.schema import STEP_COLUMNS as _STEP_COLUMNS
from bcd.journal.sync import WalSync
from bcd.model import RunResult
from bcd.state_dir import not_writable, open_database

__all__ = ["INTERRUPTED", "RUN_FIELDS", "Journal", "JournalWriteError", "RunJournal", "RunRecord", "SavedService",
           "SavedSite", "StepRecord"]  # the run records live in bcd.journal.run_records; importers find them here too

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
                log.info("journal_chain_head", journal=str(self.path), seq=ledger.head[0], hash=ledger.head[1])
                return ledger
            with self.transaction():
                had = self._db.execute("SELECT 1 FROM events UNION ALL SELECT 1 FROM runs LIMIT 1").fetchone()
                reason = ("rows written before the chain existed were adopted as found: their earlier history "
                          "is not proven" if had else "a new journal")
                adopted = ledger.adopt(time.time(), reason)
        except sqlite3.Error as exc:
            self._db.close()
            raise not_writable(self.path, exc) from exc
        log.info("journal_chain_started", journal=str(self.path), reason=reason, adopted=adopted)
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

    @contextmanager
    def transaction(self, *, sync: bool = True) -> Iterator[None]:
        """Group writes into one commit: all or nothing. `sync=False` commits without waiting for the disk
        (WAL, synchronous=NORMAL): the commit survives a crash of the process (kill -9), not a power cut.
        Health state and its events use that — probes re-derive them — while runs and steps always wait.
        Inside another transaction it joins that one. A rollback rolls the ledger's head back too."""
        if self._db.in_transaction:
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


class WriteFailures(Protocol):
    """Told of every failed run-journal write; keeps the records that may be written later (JournalWriter)."""

    @property
    def failing(self) -> bool: ...

    def report(self, exc: sqlite3.Error) -> None: ...

    def keep(self, write: Write) -> None: ...


class RunJournal:
    """Runs and steps, in the same SQLite file. Every write commits before it returns and by default fsyncs
    too; the runner writes with `sync=False` and awaits `durable()` (one fsync for the runs waiting together)
    before a step runs: a step is on disk as started before it runs, so neither kill -9 nor a power cut can hide
    a step that ran.

    When the journal cannot be written, a record of what is about to happen (a run created, a step started,
    an acknowledgement) raises JournalWriteError, so that it does not happen; a record of what has happened
    (a step's or a run's end) is kept by `failures` and written, in order, once the journal can be written."""

    def __init__(self, journal: Journal, failures: WriteFailures | None = None) -> None:
        self._journal = journal  # it made the runs and steps tables
        self._failures = failures
        self.clock = time.time

    def _write(self, write: Write, sync: bool = True) -> sqlite3.Cursor:
        """A record that must be on disk before what it describes may happen: written (and chained) now, or
        JournalWriteError (reported to `failures`). `sync=False`: the caller awaits `durable()` before then."""
        try:
            return self._journal.apply(write, self.clock(), sync=sync)
        except sqlite3.Error as exc:
            raise self._refused(exc) from exc

    def _refused(self, exc: sqlite3.Error | OSError) -> JournalWriteError:
        """The error for a write or sync that failed, reported to `failures`."""
        error = exc if isinstance(exc, sqlite3.Error) else sqlite3.OperationalError(f"sync failed: {exc}")
        if self._failures is not None:
            self._failures.report(error)
        return JournalWriteError(f"journal cannot be written: {error}")

    async def durable(self) -> None:
        """Return once every record written so far is on disk (a group commit: `bcd.journal.sync`); raises
        JournalWriteError (reported) when the disk refuses."""
        try:
            await self._journal.syncs.durable()
        except OSError as exc:
            raise self._refused(exc) from exc

    def _record(self, write: Write, sync: bool = True) -> None:
        """A record of what has already happened: written now or, while the journal cannot be written, kept by
        `failures` in order and written when it can (raises JournalWriteError only without `failures`)."""
        if self._failures is not None and self._failures.failing:
            self._failures.keep(write)  # behind what is kept already: the same row's updates stay in order
            return
        try:
            self._write(write, sync)
        except JournalWriteError:
            if self._failures is None:
                raise
            self._failures.keep(write)

    def create(self, run: RunRecord, *, sync: bool = True) -> int:
        cursor = self._write(Write(
            f"INSERT INTO runs ({run_columns}) VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.service, run.runbook, run.kind.value, run.trigger, run.reason, run.from_site, run.to_site,
             int(run.dry_run), int(run.forced), json.dumps(run.evidence), run.started, run.ended, run.result.value,
             run.detail, run.acknowledged_by, run.detected_at, run.verified_at), "runs",
        ), sync)
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish(self, run_id: int, result: RunResult, ended: float, detail: str,
               verified_at: float | None = None, *, sync: bool = True) -> None:
        """The run's end; `sync=False`: synced soon, the caller not waiting (a failure is reported)."""
        self._record(_run_write(
            "UPDATE runs SET result = ?, ended = ?, detail = ?, verified_at = ? WHERE id = ?",
            (result.value, ended, detail, verified_at, run_id),
        ), sync)
        if not sync:
            self._journal.syncs.soon(self._refused)

    def set_result(self, run_id: int, result: RunResult) -> None:
        self._record(_run_write("UPDATE runs SET result = ? WHERE id = ?", (result.value, run_id)))

    def acknowledge(self, service: str, by: str) -> list[int]:
        rows = self._journal.execute(
            "SELECT id FROM runs WHERE service = ? AND acknowledged_by IS NULL AND result IN "
            "('failed', 'aborted', 'rolled_back', 'interrupted')",
            (service,),
        ).fetchall()
        ids = [row[0] for row in rows]
        for run_id in ids:
            self._write(_run_write("UPDATE runs SET acknowledged_by = ? WHERE id = ?", (by, run_id)))
        return ids

    def acknowledge_run(self, run_id: int, by: str) -> bool:
        """Acknowledge one run (another cluster member acknowledged it); False when there was nothing to do."""
        cursor = self._write(Write(
            "UPDATE runs SET acknowledged_by = ? WHERE id = ? AND acknowledged_by IS NULL AND result IN "
            "('failed', 'aborted', 'rolled_back', 'interrupted')",
            (by, run_id), "runs", "id = ? AND acknowledged_by = ?", (run_id, by),
        ))
        return cursor.rowcount > 0

    def step_started(self, step: StepRecord, *, sync: bool = True) -> None:
        self._write(Write(
            f"INSERT OR REPLACE INTO steps ({_STEP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (step.run_id, step.seq, step.phase, step.name, step.kind, json.dumps(step.inputs), step.started,
             step.ended, step.attempts, step.outcome, step.output), "steps",
        ), sync)

    def step_finished(self, run_id: int, seq: int, *, ended: float, attempts: int, outcome: str, output: str,
                      sync: bool = True) -> None:
        self._record(_step_write(
            "UPDATE steps SET ended = ?, attempts = ?, outcome = ?, output = ? WHERE run_id = ? AND seq = ?",
            (ended, attempts, outcome, output, run_id, seq),
        ), sync)

    def step_process(self, run_id: int, seq: int, pgid: int, start: int) -> None:
        """Record the process group a step started (its leader's pid and start time)."""
        self._record(_step_write(
            "UPDATE steps SET pgid = ?, pgid_start = ? WHERE run_id = ? AND seq = ?", (pgid, start, run_id, seq)
        ))

    def unfinished_processes(self, run_id: int) -> list[tuple[int, str, int, int]]:
        """(seq, step name, pgid, start time) of the run's unfinished steps that started a process group."""
        rows = self._journal.execute(
            "SELECT seq, name, pgid, pgid_start FROM steps WHERE run_id = ? AND ended IS NULL AND pgid IS NOT NULL "
            "ORDER BY seq", (run_id,),
        ).fetchall()
        return [(row[0], row[1], row[2], row[3] or 0) for row in rows]

    def get(self, run_id: int) -> RunRecord | None:
        row = self._journal.execute(f"SELECT {run_columns} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return run_from_row(row) if row else None

    def recent(self, service: str | None = None, limit: int = 50) -> list[RunRecord]:
        sql = f"SELECT {run_columns} FROM runs"
        params: tuple[Any, ...] = ()
        if service is not None:
            sql += " WHERE service = ?"
            params = (service,)
        rows = self._journal.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
        return [run_from_row(row) for row in rows]

    def steps(self, run_id: int) -> list[StepRecord]:
        rows = self._journal.execute(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE run_id = ? ORDER BY seq", (run_id,)
        ).fetchall()
        return [StepRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), *r[6:]) for r in rows]

    def unfinished(self) -> list[RunRecord]:
        rows = self._journal.execute(
            f"SELECT {run_columns} FROM runs WHERE result IN ('running', 'waiting_approval')"
        ).fetchall()
        return [run_from_row(row) for row in rows]

    def mark_interrupted(self, run_id: int, now: float, detail: str = INTERRUPTED,
                         notes: dict[int, str] | None = None) -> None:
        """Mark the run and its unfinished steps interrupted; `notes` (seq → text) become those steps' output."""
        for seq, note in (notes or {}).items():
            self._record(_step_write(
                "UPDATE steps SET output = ? WHERE run_id = ? AND seq = ? AND ended IS NULL", (note, run_id, seq)
            ))
        self._record(Write(  # every step of the run is chained again: those it ended among them
            "UPDATE steps SET outcome = 'interrupted', ended = ? WHERE run_id = ? AND ended IS NULL", (now, run_id),
            "steps", "run_id = ?", (run_id,),
        ))
        self.finish(run_id, RunResult.INTERRUPTED, now, detail)

    def unacknowledged(self, service: str) -> RunRecord | None:
        row = self._journal.execute(
            f"SELECT {run_columns} FROM runs WHERE service = ? AND acknowledged_by IS NULL AND result IN "
            "('failed', 'aborted', 'rolled_back', 'interrupted') "
            # a runbook drill's run moves nothing: its failure is the drill's (BcdDrillFailed), not the estate's
            "AND NOT (from_site = to_site AND json_extract(evidence, '$.drill') IS NOT NULL) ORDER BY id DESC LIMIT 1",
            (service,),
        ).fetchone()
        return run_from_row(row) if row else None

    def last_ended(self, service: str) -> float | None:
        row = self._journal.execute(
            # a drill's legs start no cooldown for real failovers
            "SELECT max(ended) FROM runs WHERE service = ? AND dry_run = 0 AND result = 'succeeded' "
            "AND json_extract(evidence, '$.drill') IS NULL", (service,)
        ).fetchone()
        return row[0] if row else None

    def last_dry_run(self, service: str) -> float | None:
        row = self._journal.execute(
            "SELECT max(started) FROM runs WHERE service = ? AND dry_run = 1 AND trigger = 'auto'", (service,)
        ).fetchone()
        return row[0] if row else None


def _run_write(sql: str, params: tuple[Any, ...]) -> Write:
    """An UPDATE of one run, its id the last parameter."""
    return Write(sql, params, "runs", "id = ?", params[-1:])


def _step_write(sql: str, params: tuple[Any, ...]) -> Write:
    """An UPDATE of one step, its run id and seq the last two parameters."""
    return Write(sql, params, "steps", "run_id = ? AND seq = ?", params[-2:])
