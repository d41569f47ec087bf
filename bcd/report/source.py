"""Reading a journal for a report: read-only (a running daemon keeps writing it: WAL lets a reader in without
blocking the writer), streamed (a year of a large estate is about a million events: never held in memory).

Only what the report needs is read, and SQLite picks the fields out of each event's JSON (`json_extract`), so
Python touches one short tuple per transition; a site or state it knows comes as its index in the report's
words (`words`: a small int, which Python does not allocate, and a dict lookup by the word's one str object
hashes nothing), so a row is a tuple and a float."""

from __future__ import annotations

import bisect
import json
import math
import sqlite3
from collections.abc import Collection, Iterator

from bcd.journal.ledger_check import head_entry_at
from bcd.journal.run_records import RunRecord, StepRecord, run_columns, run_from_row
from bcd.journal.uptime import ALIVE_INTERVAL
from bcd.journal.uptime import TABLE as SPANS
from bcd.model import SiteState
from bcd.report.model import ChainHead, PlanDrill

# an event the report follows: (at, service, site (None: an active-site change), the payload's `to`, and for a
# `data_lag` event its lag (None for the others), `to` then `max`, `over` or `within`: bcd.report.lags). A
# `journal_gap` event has no service, its reason as its `to`. A site and a `to` among the words come as an index.
Row = tuple[float, "str | None", "int | str | None", "int | str | None", "float | None"]
KINDS = ("site_transition", "active_changed", "data_lag", "journal_gap")
LAG_TOS = ("max", "over", "within")
LAG_TO = ("CASE WHEN json_extract(data, '$.sample') = 'max' THEN 'max' WHEN json_extract(data, '$.over') "
          "THEN 'over' ELSE 'within' END")


def words(sites: Collection[str]) -> tuple[str, ...]:
    """The words a row's site and `to` come as indexes into: the site states, the data-lag `to`s and `sites`."""
    return tuple(dict.fromkeys((*(state.value for state in SiteState), *LAG_TOS, *sorted(sites))))


def _coded(expr: str, known: tuple[str, ...]) -> str:
    """SQL for `expr` as its index in `known` (`expr` itself when not there: evaluated once, SQLite's CASE)."""
    return f"CASE {expr} {' '.join(f'WHEN ? THEN {i}' for i in range(len(known)))} ELSE {expr} END"


def _in(column: str, names: Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    """An SQL condition keeping `names` (all when None), and its parameters."""
    if names is None:
        return "", ()
    return f" AND {column} IN ({', '.join('?' * len(names))})", tuple(names)


def _table(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


class Spans:
    """When the daemon ran, as sorted disjoint (start, end) spans; `covered(a, b)` is the time of [a, b) in them.
    `None` spans (a journal from before they were kept): all time counts as observed."""

    def __init__(self, spans: tuple[tuple[float, float], ...] | None) -> None:
        self.spans = spans
        self._starts = [start for start, _ in spans or ()]
        self._before: list[float] = []
        # the span `covered` found last (all time when there are no spans): most stretches lie within it
        self.last = (-math.inf, math.inf) if spans is None else (0.0, -1.0)
        total = 0.0
        for start, end in spans or ():
            self._before.append(total)
            total += end - start

    def _upto(self, t: float) -> float:
        """Time in the spans before `t`."""
        assert self.spans is not None
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        start, end = self.spans[i]
        return self._before[i] + min(t, end) - start

    def covered(self, a: float, b: float) -> float:
        if b <= a:
            return 0.0
        if self.spans is None:
            return b - a
        start, end = self.last
        if start <= a and b <= end:  # most stretches lie within one span: the last one found is tried first
            return b - a
        i = bisect.bisect_right(self._starts, a) - 1
        if i >= 0 and b <= self.spans[i][1]:
            self.last = self.spans[i]
            return max(0.0, b - max(a, self.spans[i][0]))
        return self._upto(b) - self._upto(a)


def spans(db: sqlite3.Connection, start: float, end: float, now: float) -> Spans:
    """The daemon's spans within [start, end]. A span still open (no stop) ends at its last heartbeat, or at
    `now` when that heartbeat is recent and no later start is journaled (the daemon runs now; a span followed by
    another was cut by a crash)."""
    if not _table(db, SPANS):
        return Spans(None)
    rows = db.execute(f"SELECT started, alive, stopped FROM {SPANS} WHERE started < ? AND coalesce(stopped, alive) "
                      f">= ? ORDER BY started", (end, start - 2 * ALIVE_INTERVAL)).fetchall()
    (latest,) = db.execute(f"SELECT max(started) FROM {SPANS}").fetchone()
    out: list[tuple[float, float]] = []
    for started, alive, stopped in rows:
        running = started == latest and now - alive <= 2 * ALIVE_INTERVAL
        stop = stopped if stopped is not None else (now if running else alive)
        a, b = max(started, start), min(stop, end)
        if out and a < out[-1][1]:  # overlapping rows (a clock step back): merged
            a = out[-1][1]
        if b > a:
            out.append((a, b))
    return Spans(tuple(out))


def events(db: sqlite3.Connection, end: float, services: Collection[str] | None,
           known: tuple[str, ...]) -> Iterator[list[Row]]:
    """Transitions, active-site changes, data lags and journal gaps before `end`, in batches, in the order they
    were journaled: those before the period set the states it starts in (one pass over the table, not one per
    question). A row is (at, service, site, to, lag), its site None for an active-site change, a site or `to`
    in `known` (bcd.report.source.words) as its index (fewer objects a row: a year is a million)."""
    where, params = _in("service", services)
    where = where and f" AND (kind = 'journal_gap' OR {where[5:]})"  # a gap is the journal's: of every service
    to = _coded(f"CASE kind WHEN 'data_lag' THEN {LAG_TO} WHEN 'journal_gap' THEN reason "
                "ELSE json_extract(data, '$.to') END", known)
    cursor = db.execute(
        f"SELECT at, service, CASE kind WHEN 'active_changed' THEN NULL ELSE {_coded('site', known)} END, {to}, "
        "CASE kind WHEN 'data_lag' THEN json_extract(data, '$.lag') END "
        f"FROM events WHERE kind IN (?, ?, ?, ?) AND at < ?{where} ORDER BY id",
        (*known, *known, *KINDS, end, *params))
    cursor.arraysize = 2000
    while batch := cursor.fetchmany():
        yield batch


def runs(db: sqlite3.Connection, start: float, end: float, services: Collection[str] | None) -> list[RunRecord]:
    """Runs (no dry runs: nothing was recovered) started in [start, end), oldest first."""
    where, params = _in("service", services)
    rows = db.execute(f"SELECT {run_columns} FROM runs WHERE dry_run = 0 AND started >= ? AND started < ?{where} "
                      "ORDER BY id", (start, end, *params)).fetchall()
    return [run_from_row(row) for row in rows]


def steps(db: sqlite3.Connection, start: float, end: float, services: Collection[str] | None
          ) -> dict[int, list[StepRecord]]:
    """The steps of the runs `runs` reads, by run, in order (one query, not one per run)."""
    where, params = _in("service", services)
    rows = db.execute("SELECT run_id, seq, phase, name, kind, inputs, started, ended, attempts, outcome, output "
                      "FROM steps WHERE run_id IN (SELECT id FROM runs WHERE dry_run = 0 AND started >= ? "
                      f"AND started < ?{where}) ORDER BY run_id, seq", (start, end, *params))
    out: dict[int, list[StepRecord]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(StepRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), *r[6:]))
    return out


def plan_drills(db: sqlite3.Connection, start: float, end: float) -> list[PlanDrill]:
    """The drills of recovery plans started in [start, end), oldest first, each with its end if it has one (the
    events have no service: the events_service index finds them among the few such)."""
    rows = db.execute(
        "SELECT json_extract(s.data, '$.drill'), json_extract(s.data, '$.plan'), s.at, "
        "json_extract(f.data, '$.result'), f.at, coalesce(f.reason, '') FROM events s LEFT JOIN events f "
        "ON f.service IS NULL AND f.kind = 'drill_finished' "
        "AND json_extract(f.data, '$.drill') = json_extract(s.data, '$.drill') "
        "WHERE s.service IS NULL AND s.kind = 'drill_started' AND json_extract(s.data, '$.drill_kind') = 'plan' "
        "AND s.at >= ? AND s.at < ? ORDER BY s.at", (start, end)).fetchall()
    return [PlanDrill(*row) for row in rows if row[1] is not None]


def chain_head(db: sqlite3.Connection, end: float) -> ChainHead | None:
    """The chain's last entry at or before `end` — in the ledger table, or an event's own row (bcd.journal.ledger_check
    .head_entry_at) — or None: no ledger, or no entry yet then."""
    if not _table(db, "ledger"):
        return None
    head = head_entry_at(db, math.nextafter(end, math.inf))
    return None if head is None else ChainHead(*head)


def first_event(db: sqlite3.Connection) -> float | None:
    """When the journal's oldest event kept happened (older ones pruned, or none written yet)."""
    row = db.execute("SELECT at FROM events ORDER BY id LIMIT 1").fetchone()
    return None if row is None else float(row[0])
