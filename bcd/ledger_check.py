"""Checking the ledger (bcd.ledger): the chain itself, and every covered row against its last entry; reading a
journal read-only (a running daemon may hold it); exporting entries as JSON lines and checking such a file.

A problem names the entry where the chain breaks: a changed entry (its hash does not match its content), a
missing one (a gap in `seq`), one that does not follow the entry before it (its `prev` is not that entry's
hash: the entries before it were rewritten), or a covered row that differs from, or has no, entry.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bcd.ledger import COVERED, GENESIS, canonical, chain_hash, entry_text, row_ref

Entry = tuple[int, float, str, str, str, str, str]  # seq, at, kind, ref, body (canonical JSON), prev, hash
Row = tuple[str, dict[str, Any]]  # a covered row: its ref, its columns
_ENTRY_COLUMNS = "seq, at, kind, ref, body, prev, hash"


@dataclass(slots=True)
class Report:
    """What a check found: the entries it walked, the chain's head, and problems as (seq, text) in seq order."""

    entries: int = 0
    first: int = 0
    head: tuple[int, str] = (0, GENESIS)
    starts_after: str = GENESIS  # the prev of the first entry: GENESIS, or a checkpoint's hash
    rows: int = 0
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
    last: tuple[int, str] | None = None
    for entry in entries:
        seq, at, kind, ref, body, prev, digest = entry
        if last is None:
            report.first, report.starts_after = seq, prev
            if expected_prev is not None and prev != expected_prev:
                report.add(seq, f"entry {seq} does not start the chain: its prev is not "
                                f"{'the genesis value' if seq == 1 else 'the hash the checkpoint kept'}")
        elif seq != last[0] + 1:
            missing = f"entry {last[0] + 1}" if seq == last[0] + 2 else f"entries {last[0] + 1}..{seq - 1}"
            report.add(last[0] + 1, f"{missing} missing: entry {seq} follows entry {last[0]}")
        elif prev != last[1]:
            report.add(seq, f"entry {seq} does not follow entry {last[0]}: its prev is not that entry's hash "
                            f"(entry {last[0]} or an earlier one was rewritten)")
        if chain_hash(prev, entry_text(seq, at, kind, ref, body)) != digest:
            report.add(seq, f"entry {seq} ({kind} {ref}) was changed: its hash does not match its content")
        report.entries += 1
        last = (seq, digest)
        yield entry
    if last is not None:
        report.head = last


def check_database(db: sqlite3.Connection) -> Report:
    """Check a journal's ledger and every covered row."""
    report = Report()
    checkpoint = _checkpoint(db)
    expected = checkpoint if checkpoint is not None else GENESIS
    latest: dict[str, dict[str, tuple[int, Mapping[str, Any]]]] = {
        table: {} for table, (_, once) in COVERED.items() if not once}
    appended = {table: _rows(db, table) for table, (_, once) in COVERED.items() if once}
    pending: dict[str, Row | None] = {table: next(rows, None) for table, rows in appended.items()}
    cursor = db.execute(f"SELECT {_ENTRY_COLUMNS} FROM ledger ORDER BY seq")
    for seq, _, kind, ref, body, _, _ in check_chain(cursor, report, expected):
        if kind in latest:
            latest[kind][ref] = (seq, json.loads(body))
        elif kind in appended:
            pending[kind] = _match_appended(report, (kind, seq, ref), json.loads(body), appended[kind], pending[kind])
    for table, rows in appended.items():
        row = pending[table]
        while row is not None:
            report.add(report.head[0] + 1, f"{table} row {row[0]} has no ledger entry (written outside bcd)")
            report.rows += 1
            row = next(rows, None)
    for table, entries in latest.items():
        _match_updated(report, db, table, entries)
    report.problems.sort(key=lambda problem: problem[0])
    return report


def _checkpoint(db: sqlite3.Connection) -> str | None:
    """The hash of the last pruned entry, as the newest checkpoint entry keeps it (None: nothing pruned)."""
    first = db.execute("SELECT min(seq) FROM ledger").fetchone()[0]
    if first is None or first == 1:
        return None
    for (body,) in db.execute("SELECT body FROM ledger WHERE kind = 'checkpoint' ORDER BY seq DESC"):
        kept = json.loads(body)
        if kept.get("through") == first - 1:
            return str(kept.get("hash"))
    return "(no checkpoint accounts for the entries before it)"


def _rows(db: sqlite3.Connection, table: str) -> Iterator[Row]:
    cursor = db.cursor().execute(f"SELECT * FROM {table} ORDER BY rowid")
    columns = [column[0] for column in cursor.description]
    for values in cursor:
        row = dict(zip(columns, values, strict=True))
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
                   entries: dict[str, tuple[int, Mapping[str, Any]]]) -> None:
    for ref, row in _rows(db, table):
        report.rows += 1
        found = entries.pop(ref, None)
        if found is None:
            report.add(report.head[0] + 1, f"{table} row {ref} has no ledger entry (written outside bcd)")
        else:
            _compare(report, (table, found[0], ref), found[1], row)
    for ref, (seq, _) in entries.items():
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
    """The chain's head as it stood at `until` (the last entry before it): what a report of a period quotes."""
    row = db.execute("SELECT seq, hash FROM ledger WHERE at < ? ORDER BY seq DESC LIMIT 1", (until,)).fetchone()
    return (row[0], row[1]) if row else None


# -- export ----------------------------------------------------------------------------------------------------
def export(db: sqlite3.Connection, out: TextIO, start: float | None = None, end: float | None = None) -> int:
    """Write the entries with `start <= at < end` as JSON lines (each entry with its prev and hash); returns
    how many. Entries are in seq order; a period cut out of the chain checks on its own (`check_lines`)."""
    sql = f"SELECT {_ENTRY_COLUMNS} FROM ledger WHERE at >= ? AND at < ? ORDER BY seq"
    count = 0
    for seq, at, kind, ref, body, prev, digest in db.execute(sql, (start or float("-inf"), end or float("inf"))):
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
