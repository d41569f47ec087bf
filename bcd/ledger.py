"""The tamper-evident ledger: every change to the journal's evidence (an event appended; a run created, finished,
its result set, acknowledged; a step started or finished; a plan run written; a config loaded; a retention
checkpoint) is an entry, chained to the one before it by SHA-256.

An entry is `seq` (1, 2, … without gaps), `at` (Unix seconds), `kind` (the table a row belongs to — `events`,
`runs`, `steps`, `plan_runs` — or `genesis`, `adopted`, `config`, `checkpoint`), `ref` (the row's key: `17`, or
`run/seq` for a step) and `body` (the row as it is after the change: every column by name, as stored, the chain's
own `seq` and `hash` columns left out). Its canonical JSON is `{"at":…,"body":…,"kind":…,"ref":…,"seq":…}` with
keys sorted, no spaces, UTF-8 (not ASCII-escaped), numbers as Python writes them (the shortest form that reads
back the same). Its `hash` is the hex SHA-256 of `prev + "\\n" + canonical JSON`, where `prev` is the previous
entry's hash (`GENESIS` for the first).

Where entries are kept: an event's entry is its own `events` row — the row is the body, its `seq` and `hash`
columns the entry's (no second row: the hot path writes one row and computes one hash). Every other entry is a
row of the `ledger` table (seq, at, kind, ref, body, prev, hash), and so are the entries of events written before
events carried their own (those rows have no `seq`). Both are written in the same transaction as the change they
record, so a committed change always has its entry; `bcd.ledger_check` reads the two in `seq` order as one chain
and checks every covered row against its entry (for an updated table: its latest entry). A table is covered by
listing it in COVERED and writing it through `Journal.apply` (an UPDATE or INSERT with the rows it may touch).
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ledger (seq INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, "
    "ref TEXT NOT NULL, body TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL)"
)
# Tables whose rows are chained: name → (key columns, append-only). An append-only table's rows are never
# updated (one entry each); the others' rows are checked against their latest entry.
COVERED: Mapping[str, tuple[tuple[str, ...], bool]] = {
    "events": (("id",), True),
    "runs": (("id",), False),
    "steps": (("run_id", "seq"), False),
    "plan_runs": (("id",), False),
}
CHAIN_COLUMNS = frozenset({"seq", "hash"})  # an events row's own entry: not part of its body
EVENT_COLUMNS = ("id", "at", "kind", "service", "site", "reason", "data")  # the body of an events row, in order

_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_string = json.encoder.encode_basestring  # what the encoder writes for a str (ensure_ascii=False)


def canonical(value: Any) -> str:
    """The canonical JSON text of `value` (sorted keys, no spaces, UTF-8)."""
    return _encode(value)


def number(value: float) -> str:
    """What the encoder writes for a number (float.__repr__), without its generic path."""
    return repr(value) if type(value) is float and math.isfinite(value) else _encode(value)


def entry_text(seq: int, at: float, kind: str, ref: str, body_text: str) -> str:
    """The entry's canonical JSON, from its body's canonical text (not encoded twice: keys are already in order)."""
    return f'{{"at":{number(at)},"body":{body_text},"kind":{_string(kind)},"ref":{_string(ref)},"seq":{seq}}}'


def event_body(  # noqa: PLR0917 - positional: the events row's columns
    row_id: int, at: float, kind: str, service: str | None, site: str | None, reason: str,
    data: str,
) -> str:
    """`canonical()` of an events row (the hot path: written out, about twice as fast as the encoder)."""
    service_text = "null" if service is None else _string(service)
    site_text = "null" if site is None else _string(site)
    return (f'{{"at":{number(at)},"data":{_string(data)},"id":{row_id},"kind":{_string(kind)},'
            f'"reason":{_string(reason)},"service":{service_text},"site":{site_text}}}')


def event_entry(  # noqa: PLR0917 - positional: the entry's seq, then the events row's columns in order
    seq: int, row_id: int, at: float, kind: str, service: str | None, site: str | None, reason: str, data: str,
) -> str:
    """`entry_text(seq, at, "events", str(row_id), event_body(...))` written out in one piece (the hot path)."""
    when = number(at)
    service_text = "null" if service is None else _string(service)
    site_text = "null" if site is None else _string(site)
    return (f'{{"at":{when},"body":{{"at":{when},"data":{_string(data)},"id":{row_id},"kind":{_string(kind)},'
            f'"reason":{_string(reason)},"service":{service_text},"site":{site_text}}},"kind":"events",'
            f'"ref":"{row_id}","seq":{seq}}}')


def chain_hash(prev: str, text: str) -> str:
    return hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()


def row_ref(table: str, row: Mapping[str, Any]) -> str:
    return "/".join(str(row[column]) for column in COVERED[table][0])


@dataclass(frozen=True, slots=True)
class Write:
    """One change to a covered table: the statement, and the rows it may have changed (`where`, with its own
    parameters; None: the row the INSERT made, by its rowid). Naming more rows than changed only repeats them."""

    sql: str
    params: tuple[Any, ...]
    table: str
    where: str | None = None
    where_params: tuple[Any, ...] = ()


def table_exists(db: sqlite3.Connection, table: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def events_chained(db: sqlite3.Connection) -> bool:
    """Whether the events table has the chain's columns (a journal opened by a bcd that keeps entries in rows)."""
    return {"seq", "hash"} <= {row[1] for row in db.execute("PRAGMA table_info(events)")}


def row_body(table: str, row: Mapping[str, Any]) -> dict[str, Any]:
    """A covered row as its entry's body: an events row without the chain's own columns."""
    if table != "events":
        return dict(row)
    return {column: value for column, value in row.items() if column not in CHAIN_COLUMNS}


def last_entry(db: sqlite3.Connection) -> tuple[int, str] | None:
    """The chain's newest entry (seq, hash), in the ledger table or an events row."""
    found = [row for row in (
        db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone(),
        db.execute("SELECT seq, hash FROM events WHERE seq IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        if events_chained(db) else None,
    ) if row is not None]
    return max((row[0], row[1]) for row in found) if found else None


class Ledger:
    """The chain's head and the appends, on the journal's connection (inside its transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.execute(SCHEMA)
        self.head: tuple[int, str] = last_entry(db) or (0, GENESIS)
        self._pending: list[tuple[int, float, str, str, str, str, str]] = []

    @property
    def empty(self) -> bool:
        """No chain yet: the ledger table always keeps its genesis, or the checkpoint that replaced it."""
        return not self._pending and not self._db.execute("SELECT 1 FROM ledger LIMIT 1").fetchone()

    def append(self, at: float, kind: str, ref: str, body: Mapping[str, Any]) -> int:
        """Chain one entry (inside the caller's transaction, written by `flush` before it commits); its seq."""
        return self.append_text(at, kind, ref, _encode(body))

    def append_text(self, at: float, kind: str, ref: str, body_text: str) -> int:
        """`append` of a body already in canonical JSON."""
        seq, prev = self.head[0] + 1, self.head[1]
        digest = chain_hash(prev, entry_text(seq, at, kind, ref, body_text))
        self._pending.append((seq, at, kind, ref, body_text, prev, digest))
        self.head = (seq, digest)
        return seq

    def chain_events(self, rows: list[tuple[Any, ...]]) -> list[tuple[int, str]]:
        """Chain events rows (EVENT_COLUMNS, in order) that carry their own entries: each one's (seq, hash), for
        its `seq` and `hash` columns (the caller writes them in its transaction; a rollback restores the head)."""
        seq, prev = self.head
        chained = []
        sha256 = hashlib.sha256
        for row in rows:
            seq += 1
            prev = sha256(f"{prev}\n{event_entry(seq, *row)}".encode()).hexdigest()
            chained.append((seq, prev))
        self.head = (seq, prev)
        return chained

    def flush(self) -> None:
        """Write the entries appended since the last flush (one statement for a whole group commit)."""
        if self._pending:
            self._db.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
            self._pending.clear()

    def rollback(self, head: tuple[int, str]) -> None:
        """The transaction was rolled back: forget what it appended."""
        self._pending.clear()
        self.head = head

    def rows(self, at: float, table: str, where: str, params: tuple[Any, ...]) -> int:
        """Chain the current content of the rows of `table` that `where` selects; how many."""
        cursor = self._db.execute(f"SELECT * FROM {table} WHERE {where}", params)
        columns = [column[0] for column in cursor.description]
        count = 0
        for values in cursor.fetchall():
            row = row_body(table, dict(zip(columns, values, strict=True)))
            self.append(at, table, row_ref(table, row), row)
            count += 1
        return count

    def adopt(self, at: float, reason: str) -> dict[str, int]:
        """Start the chain: a `genesis` entry, then one entry per row already in a covered table (their history
        before this moment is not proven, their content from now on is). Returns the rows adopted per table.
        Events rows that carry entries of a chain whose ledger is gone are adopted like the others."""
        tables = [table for table in COVERED if table_exists(self._db, table)]
        counts = {table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}
        if events_chained(self._db):
            self._db.execute("UPDATE events SET seq = NULL, hash = NULL WHERE seq IS NOT NULL")
        self.head = (0, GENESIS)
        self.append(at, "genesis", "", {"reason": reason, "adopted": counts})
        for table in tables:
            self.rows(at, table, f"1 ORDER BY {', '.join(COVERED[table][0])}", ())
        return counts

    def cover(self, at: float, table: str) -> int:
        """Adopt the rows of a covered table that has no entry yet although it has rows (written before the chain
        covered it): an `adopted` entry saying so, then one entry per row. Returns the rows adopted (0: none)."""
        if not table_exists(self._db, table):
            return 0
        count: int = self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        if not count or self._db.execute("SELECT 1 FROM ledger WHERE kind = ? LIMIT 1", (table,)).fetchone():
            return 0
        self.append(at, "adopted", table, {"table": table, "rows": count, "reason": (
            f"{table} rows written before the chain covered them were adopted as found: their earlier history "
            "is not proven")})
        self.rows(at, table, f"1 ORDER BY {', '.join(COVERED[table][0])}", ())
        return count


def prune(db: sqlite3.Connection, ledger: Ledger, before: float, now: float) -> dict[str, Any] | None:
    """Inside a transaction: drop the entries before the first one at or after `before`, with
    the append-only rows they record (events); carry the last state of every updated row (a run, a step, a plan
    run) whose entries all go forward as a new entry; chain a `checkpoint` keeping the last pruned entry's seq and
    hash, which is where what remains starts. Returns the checkpoint's body, or None when nothing was old enough."""
    ledger.flush()
    inrow = events_chained(db)
    kept = [row[0] for row in (
        db.execute("SELECT seq FROM ledger WHERE at >= ? ORDER BY seq LIMIT 1", (before,)).fetchone(),
        db.execute("SELECT seq FROM events WHERE seq IS NOT NULL AND at >= ? ORDER BY id LIMIT 1",
                   (before,)).fetchone() if inrow else None,
    ) if row is not None]
    through = min(kept) - 1 if kept else ledger.head[0]  # the head too: the checkpoint follows it
    firsts = [row[0] for row in (
        db.execute("SELECT min(seq) FROM ledger").fetchone(),
        db.execute("SELECT seq FROM events WHERE seq IS NOT NULL ORDER BY id LIMIT 1").fetchone() if inrow else None,
    ) if row is not None and row[0] is not None]
    if not firsts or through < min(firsts):
        return None
    carried = 0
    for table, (_, once) in COVERED.items():
        if once:
            continue
        stale = db.execute("SELECT body FROM ledger WHERE seq IN (SELECT max(seq) FROM ledger WHERE kind = ? "
                           "GROUP BY ref HAVING max(seq) <= ?)", (table, through)).fetchall()
        for (body,) in stale:  # the last recorded state, not the row: a changed row must still show
            last = json.loads(body)
            ledger.append(now, table, row_ref(table, last), last)
            carried += 1
    digest = _hash_of(db, through, inrow)
    deleted = {"events": _delete_events(db, through, inrow)}  # the append-only rows go with their entries
    ledger.flush()
    db.execute("DELETE FROM ledger WHERE seq <= ?", (through,))
    body = {"through": through, "hash": digest, "before": before, "deleted": deleted, "carried": carried}
    ledger.append(now, "checkpoint", str(through), body)
    return body


def _hash_of(db: sqlite3.Connection, seq: int, inrow: bool) -> str:
    """The hash of entry `seq`, wherever it is kept."""
    row = db.execute("SELECT hash FROM ledger WHERE seq = ?", (seq,)).fetchone()
    if row is None and inrow:  # the newest events row at or before it (by id: ids and seqs grow together)
        after = db.execute("SELECT id FROM events WHERE seq > ? ORDER BY id LIMIT 1", (seq,)).fetchone()
        row = db.execute("SELECT hash FROM events WHERE seq = ? AND id < ? ORDER BY id DESC LIMIT 1",
                         (seq, after[0] if after else 1 << 62)).fetchone()
    if row is None:
        raise sqlite3.DatabaseError(f"the ledger has no entry {seq} to keep in a checkpoint")
    return str(row[0])


def _delete_events(db: sqlite3.Connection, through: int, inrow: bool) -> int:
    """Delete the events rows whose entries are at or before `through`: those carrying their own (found from the
    oldest on, by id) and older ones recorded in the ledger table."""
    deleted: int = db.execute("DELETE FROM events WHERE id IN (SELECT CAST(ref AS INTEGER) FROM ledger "
                              "WHERE kind = 'events' AND seq <= ?)", (through,)).rowcount
    if inrow:
        after = db.execute("SELECT id FROM events WHERE seq > ? ORDER BY id LIMIT 1", (through,)).fetchone()
        deleted += db.execute("DELETE FROM events WHERE id < ? AND seq <= ?",
                              (after[0] if after else 1 << 62, through)).rowcount
    return deleted
