"""Runs and steps in the journal (`RunJournal`), written so that neither kill -9 nor a power cut can hide a step
that ran, and so that a journal that cannot be written refuses what is about to happen but keeps what has
happened (`WriteFailures`: the engine's writer) to write it once it can.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from bcd.journal.ledger import Write
from bcd.journal.run_records import INTERRUPTED, RunRecord, StepRecord, run_columns, run_from_row
from bcd.journal.schema import STEP_COLUMNS as _STEP_COLUMNS
from bcd.journal.store import Journal, JournalWriteError
from bcd.model import RunResult


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

    @contextmanager
    def batch(self) -> Iterator[None]:
        """The writes inside commit together, without waiting for the disk: for records that another copy keeps
        (bcd.cluster's mirrors of other instances' runs). All or nothing; JournalWriteError (reported) when the
        journal refuses."""
        try:
            with self._journal.transaction(sync=False):
                yield
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
