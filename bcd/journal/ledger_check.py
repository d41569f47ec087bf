"""Checking the ledger (bcd.journal.ledger): the chain itself, and every covered row against its last entry; reading a
journal read-only (a running daemon may hold it); exporting entries as JSON lines and checking such a file.

The chain is read from both places that keep entries (the ledger table, and events rows that carry their own),
merged by `seq` (`entries`). A problem names the entry where the chain breaks: a changed entry (its hash does not
match its content: for an events row that carries its entry, the row itself was changed), a missing one (a gap in
`seq`: for such a row, the row was deleted), one that does not follow the entry before it (its `prev` is not that
entry's hash: the entries before it were rewritten), or a covered row that differs from, or has no, entry.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bcd.journal.ledger import (
    COVERED,
    GENESIS,
    canonical,
    chain_hash,
    entry_text,
    event_body,
    event_hash,
    events_chained,
    hash_in_seal,
    row_body,
    row_ref,
    sealed_hash,
    table_exists,
)

# seq, at, kind, ref, body (canonical JSON), prev (None: not stored, the previous entry's hash), hash (None: an
# events entry not sealed yet)
Entry = tuple[int, float, str, str, str, str | None, str | None]
Row = tuple[str, dict[str, Any]]  # a covered row: its ref, its columns
UNSEALED_GRACE = 60.0  # seconds an events entry may wait for its seal before a check calls it a problem


@dataclass(slots=True)
class Report:
    """What a check found: the entries it walked, the chain's head, and problems as (seq, text) in seq order."""

    entries: int = 0
    first: int = 0
    head: tuple[int, str] = (0, GENESIS)
    starts_after: str = GENESIS  # the prev of the first entry: GENESIS, or a checkpoint's hash
    rows: int = 0
    unsealed: int = 0  # the newest events entries, not sealed yet (a running daemon seals them within seconds)
    unsealed_at: float = 0.0  # the oldest of them
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def add(self, seq: int, text: str) -> None:
        self.problems.append((seq, text))


def open_readonly(path: Path) -> sqlite3.Connection:
    """The journal opened read-only (also while a daemon writes it: WAL lets readers in)."""
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    db.execute("PRAGMA busy_timeout=5000")
    return db


def has_ledger(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'").fetchone() is not None


def check_chain(entries: Iterable[Entry], report: Report, expected_prev: str | None) -> Iterator[Entry]:
    """Walk entries in seq order, recording breaks in `report`; yield each entry for row checks.
    `expected_prev` None: the first entry's prev is taken as given (an export of a period)."""
    last: _Last | None = None
    sealed: _Last | None = None  # the newest entry with a hash: the head
    for seq, at, kind, ref, body, stored_prev, digest in entries:
        text = entry_text(seq, at, kind, ref, body)
        prev = stored_prev if stored_prev is not None else (last.digest if last is not None else expected_prev or "")
        row_id = int(ref) if kind == "events" and stored_prev is None else None  # an events row's own entry
        if last is None:
            report.first, report.starts_after = seq, prev
            if expected_prev is not None and prev != expected_prev:
                report.add(seq, f"entry {seq} does not start the chain: its prev is not "
                                f"{'the genesis value' if seq == 1 else 'the hash the checkpoint kept'}")
        elif seq <= last.seq:
            report.add(seq, f"entry {seq} is out of order: it follows entry {last.seq}")
        elif seq != last.seq + 1:
            report.add(last.seq + 1, _missing(last, seq, row_id))
        elif prev != last.digest:
            report.add(seq, _not_following(seq, last.seq))
        computed = chain_hash(prev, text)
        unknown = stored_prev is None and last is not None and seq != last.seq + 1  # its prev went with the gap
        if digest is None:  # an events entry not sealed yet: the chain goes on from its content
            report.unsealed_at = report.unsealed_at if report.unsealed else at
            report.unsealed += 1
            report.entries += 1
            last = _Last(seq, computed, computed, row_id)
            yield seq, at, kind, ref, body, stored_prev, digest
            continue
        if report.unsealed:
            report.add(seq - report.unsealed, _unsealed(seq - report.unsealed, seq - 1))
            report.unsealed = 0
        if computed != digest and not unknown:
            if stored_prev is None and last is not None and chain_hash(last.computed, text) == digest:
                report.add(seq, _not_following(seq, last.seq))  # its content is intact: the entry before was rewritten
            else:
                report.add(seq, f"entry {seq} ({kind} {ref}) was changed: its hash does not match its content")
        report.entries += 1
        last = sealed = _Last(seq, digest, computed, row_id)
        yield seq, at, kind, ref, body, stored_prev, digest
    if sealed is not None:
        report.head = (sealed.seq, sealed.digest)


@dataclass(frozen=True, slots=True)
class _Last:
    """The entry checked last: its seq, stored hash, the hash its content gives, its events row (if its own)."""

    seq: int
    digest: str
    computed: str
    row_id: int | None


def _missing(last: _Last, seq: int, row_id: int | None) -> str:
    """A gap in seq; between two events rows that carry their own entries, the rows deleted with them are named."""
    missing = f"entry {last.seq + 1}" if seq == last.seq + 2 else f"entries {last.seq + 1}..{seq - 1}"
    text = f"{missing} missing: entry {seq} follows entry {last.seq}"
    if last.row_id is None or row_id is None or row_id - last.row_id != seq - last.seq:
        return text
    rows = f"row {last.row_id + 1}" if row_id == last.row_id + 2 else f"rows {last.row_id + 1}..{row_id - 1}"
    return f"{text} (events {rows} deleted)"


def _unsealed_span(first: int, last: int) -> str:
    return f"entry {first} was" if first == last else f"entries {first}..{last} were"


def _unsealed(first: int, last: int) -> str:
    return f"{_unsealed_span(first, last)} not sealed although later entries were: their seal was deleted"


def _not_following(seq: int, before: int) -> str:
    return (f"entry {seq} does not follow entry {before}: its prev is not that entry's hash "
            f"(entry {before} or an earlier one was rewritten)")


def entries(db: sqlite3.Connection) -> Iterator[Entry]:
    """Every entry of the chain in seq order: the ledger table's and the events rows' that carry their own."""
    table = db.execute("SELECT seq, at, kind, ref, body, prev, hash FROM ledger ORDER BY seq")
    if not events_chained(db):
        yield from table
        return
    rows = db.cursor().execute("SELECT seq, hash, id, at, kind, service, site, reason, data FROM events "
                               "WHERE seq IS NOT NULL ORDER BY id")
    hashes = _Seals(db)
    in_rows = ((seq, at, "events", str(row_id), event_body(row_id, at, kind, service, site, reason, data), None,
                digest if digest is not None else hashes.get(seq))
               for seq, digest, row_id, at, kind, service, site, reason, data in rows)
    yield from heapq.merge(table, in_rows, key=lambda entry: entry[0])


class _Seals:
    """The seals' hashes, read in seq order alongside the events rows (bcd.journal.ledger: events entries' hashes)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._seals: Iterator[tuple[int, int, str]] = iter(
            db.cursor().execute("SELECT seq, first, hashes FROM seals ORDER BY seq") if table_exists(db, "seals")
            else ())
        self._seal: tuple[int, int, str] | None = next(self._seals, None)

    def get(self, seq: int) -> str | None:
        """Entry `seq`'s hash as its seal keeps it (asked in growing seq order); None: no seal covers it."""
        while self._seal is not None and self._seal[0] < seq:
            self._seal = next(self._seals, None)
        if self._seal is None or self._seal[1] > seq:
            return None
        return hash_in_seal(self._seal[1], self._seal[2], seq)


def check_database(db: sqlite3.Connection, now: float | None = None) -> Report:
    """Check a journal's ledger and every covered row (in one read transaction: a daemon may be writing).
    Events entries not sealed yet are no problem while they are recent (a running daemon seals them within
    seconds); older than UNSEALED_GRACE at `now` they are: a daemon that died, or a deleted seal."""
    report = Report()
    with _snapshot(db):
        tables = {table: once for table, (_, once) in COVERED.items() if table_exists(db, table)}
        expected = _checkpoint(db) or GENESIS
        latest: dict[str, dict[str, tuple[int, Mapping[str, Any] | None]]] = {
            table: {} for table, once in tables.items() if not once}
        appended = {table: _rows(db, table) for table, once in tables.items() if once}
        pending: dict[str, Row | None] = {table: next(rows, None) for table, rows in appended.items()}
        for seq, _, kind, ref, body, prev, _ in check_chain(entries(db), report, expected):
            if kind in latest:
                latest[kind][ref] = (seq, json.loads(body))
            elif kind in appended and prev is None:  # an events row that carries its own entry: checked with it
                report.rows += 1
            elif kind in appended:
                pending[kind] = _match_appended(report, (kind, seq, ref), json.loads(body), appended[kind],
                                                pending[kind])
        for table, rows in appended.items():
            row = pending[table]
            while row is not None:
                report.add(report.head[0] + 1, f"{table} row {row[0]} has no ledger entry (written outside bcd)")
                report.rows += 1
                row = next(rows, None)
        for table, found in latest.items():
            _match_updated(report, db, table, found)
    if report.unsealed and report.unsealed_at < (time.time() if now is None else now) - UNSEALED_GRACE:
        first = report.head[0] + 1
        oldest = datetime.fromtimestamp(report.unsealed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        report.add(first, f"{_unsealed_span(first, first + report.unsealed - 1)} never sealed (the oldest from "
                          f"{oldest}): the daemon died before sealing them and has not started since (its next "
                          "start seals them as found), or their seal was deleted")
    report.problems.sort(key=lambda problem: problem[0])
    return report


@contextmanager
def _snapshot(db: sqlite3.Connection) -> Iterator[None]:
    """One read transaction around what is read, so that the ledger and the rows agree with each other."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("ROLLBACK")


def _first_seq(db: sqlite3.Connection) -> int | None:
    firsts = [row[0] for row in (
        db.execute("SELECT min(seq) FROM ledger").fetchone(),
        db.execute("SELECT seq FROM events WHERE seq IS NOT NULL ORDER BY id LIMIT 1").fetchone()
        if events_chained(db) else None,
    ) if row is not None and row[0] is not None]
    return min(firsts) if firsts else None


def _checkpoint(db: sqlite3.Connection) -> str | None:
    """The hash of the last pruned entry, as the newest checkpoint entry keeps it (None: nothing pruned)."""
    first = _first_seq(db)
    if first is None or first == 1:
        return None
    for (body,) in db.execute("SELECT body FROM ledger WHERE kind = 'checkpoint' ORDER BY seq DESC"):
        kept = json.loads(body)
        if kept.get("through") == first - 1:
            return str(kept.get("hash"))
    return "(no checkpoint accounts for the entries before it)"


def _rows(db: sqlite3.Connection, table: str) -> Iterator[Row]:
    """A covered table's rows as their entries' bodies; of events, those whose entries are in the ledger table."""
    own = " WHERE seq IS NULL" if table == "events" and events_chained(db) else ""
    cursor = db.cursor().execute(f"SELECT * FROM {table}{own} ORDER BY rowid")
    columns = [column[0] for column in cursor.description]
    for values in cursor:
        row = row_body(table, dict(zip(columns, values, strict=True)))
        yield row_ref(table, row), row


def _match_appended(report: Report, where: tuple[str, int, str], body: Mapping[str, Any], rows: Iterator[Row],
                    row: Row | None) -> Row | None:
    """Match an append-only table's entry (table, seq, ref) with its row (both in order); returns the next
    unmatched row."""
    table, seq, ref = where
    while row is not None and int(row[0]) < int(ref):
        report.add(seq, f"{table} row {row[0]} has no ledger entry (written outside bcd)")
        report.rows += 1
        row = next(rows, None)
    if row is None or row[0] != ref:
        report.add(seq, f"{table} row {ref} is missing (entry {seq} records it)")
        return row
    report.rows += 1
    _compare(report, where, body, row[1])
    return next(rows, None)


def _match_updated(report: Report, db: sqlite3.Connection, table: str,
                   entries: dict[str, tuple[int, Mapping[str, Any] | None]]) -> None:
    """Each row against its latest entry; a latest entry with the body null records the row deleted on purpose."""
    why = "written outside bcd" if entries else (  # a table with no entry at all may predate its coverage
        f"written outside bcd, or by a bcd that did not chain {table} yet: the daemon adopts those when it starts")
    for ref, row in _rows(db, table):
        report.rows += 1
        found = entries.pop(ref, None)
        if found is None:
            report.add(report.head[0] + 1, f"{table} row {ref} has no ledger entry ({why})")
        elif found[1] is None:
            report.add(found[0], f"{table} row {ref} is there although entry {found[0]} records it deleted "
                                 "(written again outside bcd)")
        else:
            _compare(report, (table, found[0], ref), found[1], row)
    for ref, (seq, body) in entries.items():
        if body is not None:
            report.add(seq, f"{table} row {ref} is missing (entry {seq} records it)")


def _compare(report: Report, where: tuple[str, int, str], body: Mapping[str, Any], row: Mapping[str, Any]) -> None:
    """A column the entry lacks was added to the table since: it must be empty (NULL)."""
    table, seq, ref = where
    changed = [column for column in {*body, *row} if body.get(column) != row.get(column)]
    if changed:
        column = sorted(changed)[0]
        report.add(seq, f"{table} row {ref} differs from entry {seq} ({column}: {body.get(column)!r} in the ledger, "
                        f"{row.get(column)!r} in the row)")


def head_at(db: sqlite3.Connection, until: float) -> tuple[int, str] | None:
    """The chain's head as it stood at `until`: (seq, hash) of the newest entry whose `at` is before it, None when
    there is none. What a report of a period quotes; an export of the entries up to `until` ends with it, and the
    next period's entries continue from it (their first `prev`)."""
    head = head_entry_at(db, until)
    return None if head is None else (head[0], head[1])


def head_entry_at(db: sqlite3.Connection, until: float) -> tuple[int, str, float] | None:
    """`head_at`, with the entry's `at`."""
    found = [row for row in (
        db.execute("SELECT seq, hash, at FROM ledger WHERE at < ? ORDER BY seq DESC LIMIT 1", (until,)).fetchone(),
        _events_head_at(db, until) if events_chained(db) else None,
    ) if row is not None]
    return max((row[0], row[1], row[2]) for row in found) if found else None


def _events_head_at(db: sqlite3.Connection, until: float) -> tuple[int, str, float] | None:
    """The newest events entry before `until` whose hash is known (an unsealed one is skipped: not proven yet)."""
    sql = "SELECT seq, hash, at FROM events WHERE seq IS NOT NULL AND at < ?"
    row = db.execute(f"{sql} ORDER BY id DESC LIMIT 1", (until,)).fetchone()
    if row is not None and row[1] is None and sealed_hash(db, row[0]) is None:
        sealed = db.execute("SELECT max(seq) FROM seals").fetchone()[0] if table_exists(db, "seals") else None
        row = db.execute(f"{sql} AND seq <= ? ORDER BY id DESC LIMIT 1", (until, sealed or 0)).fetchone()
    if row is None:
        return None
    digest = event_hash(db, row[0], row[1])
    return None if digest is None else (row[0], digest, row[2])


# -- export ----------------------------------------------------------------------------------------------------
def export(db: sqlite3.Connection, out: TextIO, start: float | None = None, end: float | None = None) -> int:
    """Write the entries with `start <= at < end` as JSON lines (each entry with its prev and hash); returns
    how many. Entries are in seq order; a period cut out of the chain checks on its own (`check_lines`)."""
    low, high = start or float("-inf"), end or float("inf")
    count, last = 0, GENESIS
    with _snapshot(db):
        for seq, at, kind, ref, body, stored_prev, digest in entries(db):
            if digest is None:  # not sealed yet, nor anything after it
                break
            prev = stored_prev if stored_prev is not None else last
            last = digest
            if low <= at < high:
                out.write(canonical({"seq": seq, "at": at, "kind": kind, "ref": ref, "body": json.loads(body),
                                     "prev": prev, "hash": digest}) + "\n")
                count += 1
    return count


def check_lines(lines: Iterable[str], report: Report) -> None:
    """Check an export offline: each line's hash, and the chain from its first line's prev on."""

    def entries() -> Iterator[Entry]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                yield (int(item["seq"]), item["at"], str(item["kind"]), str(item["ref"]), canonical(item["body"]),
                       str(item["prev"]), str(item["hash"]))
            except (ValueError, KeyError, TypeError) as exc:
                report.add(report.head[0] + 1, f"line {number} is not a ledger entry ({exc})")
                return

    for _ in check_chain(entries(), report, None):
        pass
