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

Where entries are kept: an event's entry is its own `events` row — the row is the body, its `seq` column the
entry's seq (no second row: the hot path writes one row). Its hash is not computed in the commit that writes it:
the events entries written since the last seal are hashed together and their hashes stored as one `seals` row
(seq of the last, seq of the first, their hex hashes concatenated), at the first commit SEAL_EVERY seconds after
the oldest was written (or once SEAL_MAX wait), before any other entry is chained, and when the journal closes;
a journal whose daemon died seals what it finds when it opens. Hashing a batch at once, with warm caches, costs
a fraction of hashing each event in its own commit (bench/bench_journal.py). Events rows written by the bcd before
seals keep their hash in their own `hash` column. Every other entry is a
row of the `ledger` table (seq, at, kind, ref, body, prev, hash), and so are the entries of events written before
events carried their own (those rows have no `seq`). Both are written in the same transaction as the change they
record, so a committed change always has its entry; `bcd.journal.ledger_check` reads the two in `seq` order as one chain
and checks every covered row against its entry (for an updated table: its latest entry). A table is covered by
listing it in COVERED and writing it through `Journal.apply` (an UPDATE or INSERT with the rows it may touch); a
row of an updated table is deleted on purpose through `Journal.delete`: its latest entry then has the body `null`.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def _compiled_seal_hashes() -> Callable[[str, list[tuple[Any, ...]]], list[str] | None] | None:
    try:
        from bcd.journal._chain import seal_hashes  # optional: built where a C compiler was
    except ImportError:  # not built (no C compiler or OpenSSL headers where bcd was installed): Python does it
        return None
    return seal_hashes


_compiled = _compiled_seal_hashes()
HASHING = "python" if _compiled is None else "compiled"  # which does the seals' hashing (logged at start)

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
    "bookings": (("id",), False),
}
SEALS = "CREATE TABLE IF NOT EXISTS seals (seq INTEGER PRIMARY KEY, first INTEGER NOT NULL, hashes TEXT NOT NULL)"
SEAL_EVERY = 5.0  # seconds an events entry waits at most for its hash (while the journal is written)
SEAL_MAX = 1024  # events entries waiting at most: then the next commit seals them
HASH_LENGTH = 64
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


def seal_hashes(prev: str, rows: list[tuple[Any, ...]]) -> list[str]:
    """The hashes of the entries of events rows (EVENT_COLUMNS…, seq) chained after hash `prev`, in order: compiled
    (bcd/journal/_chain.c, about half the CPU) where it is built and the rows are of the plain types it writes."""
    if _compiled is not None and (hashes := _compiled(prev, rows)) is not None:
        return hashes
    return python_seal_hashes(prev, rows)


def python_seal_hashes(prev: str, rows: list[tuple[Any, ...]]) -> list[str]:
    """`seal_hashes` in Python: the reference the compiled one is tested against."""
    # event_entry() written out (a third faster than calling it; test_ledger_seals checks that both agree):
    # each entry's canonical JSON first, then the chain over them (two tight loops stay in the CPU's caches)
    string = _string
    texts = [f'{{"at":{(when := repr(at) if type(at) is float else number(at))},"body":{{"at":{when},'
             f'"data":{string(data)},"id":{row_id},"kind":{string(kind)},"reason":{string(reason)},'
             f'"service":{"null" if service is None else string(service)},'
             f'"site":{"null" if site is None else string(site)}}},"kind":"events","ref":"{row_id}","seq":{seq}}}'
             for row_id, at, kind, service, site, reason, data, seq in rows]
    hashes, sha256 = [], hashlib.sha256
    for text in texts:
        prev = sha256(f"{prev}\n{text}".encode()).hexdigest()
        hashes.append(prev)
    return hashes


def chain_hash(prev: str, text: str) -> str:
    return hashlib.sha256(f"{prev}\n{text}".encode()).hexdigest()


Mark = tuple[tuple[int, str], list[tuple[Any, ...]], int, float]


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


def sealed_hash(db: sqlite3.Connection, seq: int) -> str | None:
    """An events entry's hash as a seal keeps it; None: no seal covers it (not sealed yet)."""
    row = db.execute("SELECT first, hashes FROM seals WHERE seq >= ? ORDER BY seq LIMIT 1", (seq,)).fetchone()
    if row is None or row[0] > seq:
        return None
    return hash_in_seal(row[0], str(row[1]), seq)


def hash_in_seal(first: int, hashes: str, seq: int) -> str:
    """Entry `seq`'s hash in a seal that starts at entry `first` (its hex hashes concatenated)."""
    start = (seq - first) * HASH_LENGTH
    return hashes[start:start + HASH_LENGTH]


def event_hash(db: sqlite3.Connection, seq: int, stored: str | None) -> str | None:
    """An events row's entry hash: its own column (written before seals), or its seal's; None: not sealed yet."""
    return stored if stored is not None else sealed_hash(db, seq)


def last_entry(db: sqlite3.Connection) -> tuple[int, str] | None:
    """The chain's newest entry whose hash is known (seq, hash): in the ledger table, a seal, or an events row that
    carries its own; events entries written after it are not sealed yet (`unsealed`)."""
    found = [row for row in (
        db.execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone(),
        db.execute(f"SELECT seq, substr(hashes, -{HASH_LENGTH}) FROM seals ORDER BY seq DESC LIMIT 1").fetchone()
        if table_exists(db, "seals") else None,
        db.execute("SELECT seq, hash FROM events WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
        if events_chained(db) and not _sealing(db) else None,
    ) if row is not None]
    return max((row[0], row[1]) for row in found) if found else None


def _sealing(db: sqlite3.Connection) -> bool:
    """Whether the journal has seals (then no events row written after them carries its own hash)."""
    return table_exists(db, "seals") and db.execute("SELECT 1 FROM seals LIMIT 1").fetchone() is not None


def unsealed(db: sqlite3.Connection, after: int) -> list[tuple[Any, ...]]:
    """Events rows chained after entry `after` whose hash no seal keeps (a daemon stopped before sealing them),
    as (EVENT_COLUMNS…, seq), in order."""
    if not events_chained(db):
        return []
    return db.execute(f"SELECT {', '.join(EVENT_COLUMNS)}, seq FROM events WHERE seq > ? AND hash IS NULL "
                      "ORDER BY id", (after,)).fetchall()


class Ledger:
    """The chain's head and the appends, on the journal's connection (inside its transactions). Events entries
    are chained as their rows are written (`events_written`: their seqs) and hashed when sealed (`seal`)."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._clock = clock
        db.execute(SCHEMA)
        db.execute(SEALS)
        self._head: tuple[int, str] = last_entry(db) or (0, GENESIS)
        self._pending: list[tuple[int, float, str, str, str, str, str]] = []
        self._unsealed: list[tuple[Any, ...]] = unsealed(db, self._head[0])  # (EVENT_COLUMNS…, seq)
        self._since = clock()  # when the oldest unsealed entry was written

    @property
    def empty(self) -> bool:
        """No chain yet: the ledger table always keeps its genesis, or the checkpoint that replaced it."""
        return not self._pending and not self._db.execute("SELECT 1 FROM ledger LIMIT 1").fetchone()

    @property
    def head(self) -> tuple[int, str]:
        """The newest entry (seq, hash), sealing the events entries that wait (inside the caller's transaction)."""
        self.seal()
        return self._head

    @property
    def unsealed(self) -> int:
        """Events entries written whose hashes are not computed yet."""
        return len(self._unsealed)

    def waited(self) -> float:
        """Seconds the oldest unsealed events entry has waited (0 when none waits)."""
        return self._clock() - self._since if self._unsealed else 0.0

    @property
    def next_seq(self) -> int:
        return self._head[0] + len(self._unsealed) + 1

    def append(self, at: float, kind: str, ref: str, body: Mapping[str, Any]) -> int:
        """Chain one entry (inside the caller's transaction, written by `flush` before it commits); its seq."""
        return self.append_text(at, kind, ref, _encode(body))

    def append_text(self, at: float, kind: str, ref: str, body_text: str) -> int:
        """`append` of a body already in canonical JSON."""
        seq, prev = self.head[0] + 1, self._head[1]
        digest = chain_hash(prev, entry_text(seq, at, kind, ref, body_text))
        self._pending.append((seq, at, kind, ref, body_text, prev, digest))
        self._head = (seq, digest)
        return seq

    def events_written(self, rows: list[tuple[Any, ...]]) -> None:
        """Events rows (EVENT_COLUMNS…, seq) were written with seqs from `next_seq` on: they wait for their seal."""
        if not self._unsealed:
            self._since = self._clock()
        self._unsealed.extend(rows)

    def seal(self) -> None:
        """Hash the events entries that wait, in one pass, and keep their hashes in one `seals` row."""
        rows = self._unsealed
        if not rows:
            return
        hashes = seal_hashes(self._head[1], rows)
        self._db.execute("INSERT INTO seals VALUES (?, ?, ?)", (rows[-1][-1], rows[0][-1], "".join(hashes)))
        self._head = (rows[-1][-1], hashes[-1])
        self._unsealed = []  # a new list: `mark` keeps the old one for a rollback

    def flush(self) -> None:
        """Before a commit: seal the events entries that have waited long enough, and write the entries appended
        since the last flush (one statement for a whole group commit)."""
        if self._unsealed and (len(self._unsealed) >= SEAL_MAX or self.waited() >= SEAL_EVERY):
            self.seal()
        if self._pending:
            self._db.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)", self._pending)
            self._pending.clear()

    def mark(self) -> Mark:
        """Where the chain stands at a transaction's start, for `rollback`."""
        return self._head, self._unsealed, len(self._unsealed), self._since

    def rollback(self, mark: Mark) -> None:
        """The transaction was rolled back: forget what it appended, written and sealed."""
        self._pending.clear()
        self._head, self._unsealed, count, self._since = mark
        del self._unsealed[count:]

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

    def deleted(self, at: float, table: str, where: str, params: tuple[Any, ...]) -> int:
        """Chain the deletion on purpose of the rows of updated table `table` that `where` selects (an entry each,
        its body `null`: the row is gone and meant to be), before they are deleted; how many."""
        assert not COVERED[table][1], f"{table} is append-only: its rows go only with retention"
        keys = COVERED[table][0]
        refs = ["/".join(str(value) for value in values)  # row_ref, of the key columns alone
                for values in self._db.execute(f"SELECT {', '.join(keys)} FROM {table} WHERE {where}", params)]
        for ref in refs:
            self.append_text(at, table, ref, "null")
        return len(refs)

    def adopt(self, at: float, reason: str) -> dict[str, int]:
        """Start the chain: a `genesis` entry, then one entry per row already in a covered table (their history
        before this moment is not proven, their content from now on is). Returns the rows adopted per table.
        Events rows that carry entries of a chain whose ledger is gone are adopted like the others."""
        tables = [table for table in COVERED if table_exists(self._db, table)]
        counts = {table: self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}
        if events_chained(self._db):
            self._db.execute("UPDATE events SET seq = NULL, hash = NULL WHERE seq IS NOT NULL")
        self._db.execute("DELETE FROM seals")
        self._head, self._unsealed = (0, GENESIS), []
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
    ledger.seal()
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
            if last is None:  # deleted on purpose (`Ledger.deleted`): its entries go, nothing to carry
                continue
            ledger.append(now, table, row_ref(table, last), last)
            carried += 1
    digest = _hash_of(db, through, inrow)
    deleted = {"events": _delete_events(db, through, inrow)}  # the append-only rows go with their entries
    ledger.flush()
    db.execute("DELETE FROM ledger WHERE seq <= ?", (through,))
    db.execute("DELETE FROM seals WHERE seq <= ?", (through,))  # a seal reaching past `through` stays whole
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
        if row is not None and row[0] is None:
            row = (sealed_hash(db, seq),)
    if row is None or row[0] is None:
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
