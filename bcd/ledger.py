"""The tamper-evident ledger: an append-only table, in the journal's SQLite file, of every change to the journal
(an event appended; a run created, finished, its result set, acknowledged; a step started or finished; a config
loaded; a retention checkpoint), each entry chained to the one before it by SHA-256.

An entry is `seq` (1, 2, … without gaps), `at` (Unix seconds), `kind` (the table a row belongs to — `events`,
`runs`, `steps` — or `genesis`, `config`, `checkpoint`), `ref` (the row's key: `17`, or `run/seq` for a step)
and `body` (the row as it is after the change: every column by name, as stored). Its canonical JSON is
`{"at":…,"body":…,"kind":…,"ref":…,"seq":…}` with keys sorted, no spaces, UTF-8 (not ASCII-escaped), numbers
as Python writes them (the shortest form that reads back the same). Its `hash` is the hex SHA-256 of
`prev + "\\n" + canonical JSON`, where `prev` is the previous entry's hash (`GENESIS` for the first).

The ledger is written in the same transaction as the change it records, so a committed change always has its
entry. The journal's own tables stay as they were (queries do not change); `bcd.ledger_check` also checks that
every covered row equals what its last entry says. A table is covered by listing it in COVERED and writing it
through `Journal.apply` (an UPDATE or INSERT with the rows it may touch) — nothing else.
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
}

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


class Ledger:
    """The chain's head and the appends, on the journal's connection (inside its transactions)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        db.execute(SCHEMA)
        row = db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        self.head: tuple[int, str] = (row[0], row[1]) if row else (0, GENESIS)
        self._pending: list[tuple[int, float, str, str, str, str, str]] = []

    @property
    def empty(self) -> bool:
        return self.head[0] == 0 and not self._db.execute("SELECT 1 FROM ledger LIMIT 1").fetchone()

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

    def flush(self) -> None:
        """Write the entries appended since the last flush (one statement for a whole group commit)."""
        if self._pending:
            self._db.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
            self._pending.clear()

    def rollback(self, head: tuple[int, str]) -> None:
        """The transaction was rolled back: forget what it appended."""
        self._pending.clear()
        self.head = head

    def rows(self, at: float, table: str, where: str, params: tuple[Any, ...]) -> None:
        """Chain the current content of the rows of `table` that `where` selects."""
        cursor = self._db.execute(f"SELECT * FROM {table} WHERE {where}", params)
        columns = [column[0] for column in cursor.description]
        for values in cursor.fetchall():
            row = dict(zip(columns, values, strict=True))
            self.append(at, table, row_ref(table, row), row)

    def adopt(self, at: float, reason: str) -> dict[str, int]:
        """Start the chain: a `genesis` entry, then one entry per row already in a covered table (their history
        before this moment is not proven, their content from now on is). Returns the rows adopted per table."""
        counts = {table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                  for table in COVERED}
        self.append(at, "genesis", "", {"reason": reason, "adopted": counts})
        for table, (keys, _) in COVERED.items():
            self.rows(at, table, f"1 ORDER BY {', '.join(keys)}", ())
        return counts


def prune(db: sqlite3.Connection, ledger: Ledger, before: float, now: float) -> dict[str, Any] | None:
    """Inside a transaction: drop the entries before the first one at or after `before`, with
    the append-only rows they record (events); carry the last state of every updated row (a run, a step) whose
    entries all go forward as a new entry; chain a `checkpoint` keeping the last pruned entry's seq and hash,
    which is where what remains starts. Returns the checkpoint's body, or None when nothing was old enough."""
    ledger.flush()
    row = db.execute("SELECT seq FROM ledger WHERE at >= ? ORDER BY seq LIMIT 1", (before,)).fetchone()
    through = row[0] - 1 if row else ledger.head[0]  # the head too: the checkpoint follows it
    first = db.execute("SELECT min(seq) FROM ledger").fetchone()[0]
    if first is None or through < first:
        return None
    carried = 0
    for table, (_, once) in COVERED.items():
        if once:
            continue
        stale = db.execute("SELECT body FROM ledger WHERE seq IN (SELECT max(seq) FROM ledger WHERE kind = ? "
                           "GROUP BY ref HAVING max(seq) <= ?)", (table, through)).fetchall()
        for (body,) in stale:  # the last recorded state, not the row: a changed row must still show
            row_body = json.loads(body)
            ledger.append(now, table, row_ref(table, row_body), row_body)
            carried += 1
    deleted: dict[str, int] = {}
    for table, (keys, once) in COVERED.items():
        if once:  # rows of an append-only table go with their entries
            cursor = db.execute(f"DELETE FROM {table} WHERE {keys[0]} IN (SELECT CAST(ref AS INTEGER) FROM ledger "
                                "WHERE kind = ? AND seq <= ?)", (table, through))
            deleted[table] = cursor.rowcount
    ledger.flush()
    (digest,) = db.execute("SELECT hash FROM ledger WHERE seq = ?", (through,)).fetchone()
    db.execute("DELETE FROM ledger WHERE seq <= ?", (through,))
    body = {"through": through, "hash": digest, "before": before, "deleted": deleted, "carried": carried}
    ledger.append(now, "checkpoint", str(through), body)
    return body
