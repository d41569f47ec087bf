"""Plan runs in the journal: one row per run (its services, groups, each move's run id, result and times, the
gates and who approved them, as JSON), written and committed before what it describes happens, and chained in the
journal's ledger like runs and steps (bcd.journal.ledger: every write goes through `Journal.apply`).

The table's partial unique index is the plan's local lock: at most one run of a plan is open (running,
waiting at a gate, or interrupted) at a time, whatever asks — the database refuses a second.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from dataclasses import replace
from typing import Any

from bcd.journal import Journal, JournalWriteError
from bcd.journal.ledger import Write
from bcd.plans.model import OPEN_STATES, Move, PlanRun

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS plan_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, plan TEXT NOT NULL, state TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS plan_runs_one_open ON plan_runs (plan)
    WHERE state IN ({", ".join(f"'{state}'" for state in sorted(OPEN_STATES))});
CREATE INDEX IF NOT EXISTS plan_runs_plan ON plan_runs (plan, id);
"""


class PlanBusy(Exception):
    """Another run of the plan is open; `holder` names it."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class PlanJournal:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self.clock = time.time
        journal.create(SCHEMA.split(";"))
        journal.cover("plan_runs")  # rows a bcd wrote before the chain covered plan runs

    def create(self, run: PlanRun) -> PlanRun:
        """Write a new run: with its own id when it has one (in a cluster, the plan lock's token: the same on
        every instance), else with the next (filled in). Raises PlanBusy when the plan has an open run (or the id
        is taken), JournalWriteError when the journal cannot be written."""
        try:
            cursor = self._journal.apply(Write(
                "INSERT INTO plan_runs (id, plan, state, started, ended, data) VALUES (?, ?, ?, ?, ?, ?)",
                (run.id or None, run.plan, run.state.value, run.started, run.ended, _data(run)), "plan_runs"),
                self.clock())
        except sqlite3.IntegrityError:
            holder = self.open_run(run.plan)
            raise PlanBusy(f"plan run {holder.id} of {run.plan} is {holder.state}" if holder else run.plan) from None
        except sqlite3.Error as exc:
            raise JournalWriteError(f"journal cannot be written: {exc}") from exc
        assert cursor.lastrowid is not None
        return replace(run, id=cursor.lastrowid)

    def save(self, run: PlanRun) -> None:
        """Committed without waiting for the disk (it survives kill -9, not a power cut): WAL keeps commits in
        order and the move's run is committed with a full sync right after its `moving`, so whatever of a run
        is on disk after a power cut, the plan run's record before it is too (a run that never started needs
        no record: resume starts it)."""
        try:
            with self._journal.transaction(sync=False):
                self._journal.apply(Write("UPDATE plan_runs SET state = ?, ended = ?, data = ? WHERE id = ?",
                                          (run.state.value, run.ended, _data(run), run.id), "plan_runs", "id = ?",
                                          (run.id,)), self.clock())
        except sqlite3.Error as exc:
            raise JournalWriteError(f"journal cannot be written: {exc}") from exc

    def adopt(self, run: PlanRun) -> None:
        """Keep another instance's version of a run (shared through etcd) as this journal's record of it.
        Raises PlanBusy when this journal has another open run of the plan, JournalWriteError when it cannot be
        written."""
        try:
            self._journal.apply(Write(
                "INSERT INTO plan_runs (id, plan, state, started, ended, data) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, ended = excluded.ended, "
                "data = excluded.data", (run.id, run.plan, run.state.value, run.started, run.ended, _data(run)),
                "plan_runs", "id = ?", (run.id,)), self.clock(), sync=False)
        except sqlite3.IntegrityError:
            holder = self.open_run(run.plan)
            raise PlanBusy(f"plan run {holder.id} of {run.plan} is {holder.state}" if holder else run.plan) from None
        except sqlite3.Error as exc:
            raise JournalWriteError(f"journal cannot be written: {exc}") from exc

    def get(self, run_id: int) -> PlanRun | None:
        row = self._journal.execute("SELECT id, data FROM plan_runs WHERE id = ?", (run_id,)).fetchone()
        return _run(row) if row else None

    def recent(self, plan: str | None = None, limit: int = 50) -> list[PlanRun]:
        where, params = ("WHERE plan = ?", (plan,)) if plan is not None else ("", ())
        rows = self._journal.execute(f"SELECT id, data FROM plan_runs {where} ORDER BY id DESC LIMIT ?",
                                     (*params, limit)).fetchall()
        return [_run(row) for row in rows]

    def open_run(self, plan: str) -> PlanRun | None:
        states = ", ".join(f"'{state}'" for state in sorted(OPEN_STATES))
        row = self._journal.execute(f"SELECT id, data FROM plan_runs WHERE plan = ? AND state IN ({states})",
                                    (plan,)).fetchone()
        return _run(row) if row else None

    def results(self) -> dict[tuple[str, str], int]:
        """Ended runs counted by (plan, state), a plan drill's left out (its drill is counted: bcd.drills)."""
        rows = self._journal.execute("SELECT plan, state, count(*) FROM plan_runs WHERE ended IS NOT NULL "
                                     "AND json_extract(data, '$.drill') IS NULL GROUP BY plan, state").fetchall()
        return {(plan, state): count for plan, state, count in rows}

    def unfinished(self) -> list[PlanRun]:
        """Runs the journal shows running or at a gate (the daemon stopped during them)."""
        rows = self._journal.execute("SELECT id, data FROM plan_runs WHERE state IN ('running', 'waiting_gate')"
                                     ).fetchall()
        return [_run(row) for row in rows]

    def durations(self, runbooks: dict[str, str]) -> dict[str, float]:
        """service -> the mean duration of its succeeded failover runs with its runbook (not dry runs)."""
        rows = self._journal.execute(
            "SELECT service, runbook, avg(ended - started) FROM runs WHERE kind = 'failover' AND dry_run = 0 "
            "AND result = 'succeeded' GROUP BY service, runbook").fetchall()
        return {service: seconds for service, runbook, seconds in rows if runbooks.get(service) == runbook}


def _data(run: PlanRun) -> str:
    """The run as JSON, without its groups (derived from the moves). The record is written whole at every
    change of one of its moves: each move's text is kept from the saves before, so a save encodes only the
    moves that changed, not the whole estate again."""
    data = replace(run, moves=()).to_json()
    del data["groups"], data["services"]
    head = json.dumps(data)
    return f'{head[:-1]}, "services": [{", ".join(map(_move_text, run.moves))}]}}'


@functools.lru_cache(maxsize=4096)
def _move_text(move: Move) -> str:
    return json.dumps(move.to_json())


def _run(row: tuple[Any, ...]) -> PlanRun:
    return PlanRun.from_json(row[0], json.loads(row[1]))
