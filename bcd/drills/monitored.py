"""When bcd first monitored each service and each recovery plan: what BcdDrillOverdue and BcdPlanDrillOverdue count
one never drilled successfully from, so that a new install (or a service or plan new to the config) is overdue
`drills_max_age` after it came, not at once, and a restart changes nothing.

Kept in the journal's `monitored` table, a row per (kind, name) ever configured, written when a config first names
it. Not chained: it only delays an alert; the report's risks do not read it. Read once and then from memory: the
config's collection is compared by identity at each call (a scrape), the journal touched only when a load brings
a new name. A journal older than the table (an upgrade) dates what it already had from its oldest record. A write
that fails is logged and the time kept in memory.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping

import structlog

from bcd.journal import Journal

log = structlog.get_logger("bcd.drills")

SCHEMA = ("CREATE TABLE IF NOT EXISTS monitored (kind TEXT NOT NULL, name TEXT NOT NULL, since REAL NOT NULL, "
          "PRIMARY KEY (kind, name))")
KINDS = ("service", "plan")


class Monitored:
    def __init__(self, journal: Journal, clock: Callable[[], float] = time.time) -> None:
        self._journal = journal
        self._clock = clock
        self._since: dict[str, dict[str, float]] = {kind: {} for kind in KINDS}
        self._for: dict[str, object] = {}  # kind -> the collection `_since[kind]` was last brought up to date for
        journal.create([SCHEMA])

    def since(self, kind: str, names: Collection[str]) -> Mapping[str, float]:
        """name -> when bcd first monitored it, for every name in `names` (the config's services or plans) and any
        the journal knew before; the same mapping until a load brings a new name."""
        if names is not self._for.get(kind):
            new = frozenset(names) - self._since[kind].keys()
            if new:
                self._add(kind, new)
            self._for[kind] = names
        return self._since[kind]

    def _add(self, kind: str, new: frozenset[str]) -> None:
        now = self._clock()
        try:
            with self._journal.transaction():
                first = self._journal.execute("SELECT 1 FROM monitored LIMIT 1").fetchone() is None
                since = min(now, self._oldest()) if first else now
                known = dict(self._journal.execute("SELECT name, since FROM monitored WHERE kind = ?",
                                                   (kind,)).fetchall())
                added = sorted(new - known.keys())
                for name in added:
                    self._journal.execute("INSERT INTO monitored VALUES (?, ?, ?)", (kind, name, since))
        except sqlite3.Error as exc:
            log.warning("monitored_not_journaled", kind=kind, names=len(new), error=str(exc))
            known, added, since = {}, sorted(new), now
        self._since[kind] = {**self._since[kind], **known, **dict.fromkeys(added, since)}

    def _oldest(self) -> float:
        """When the journal's record begins: its first event, ledger entry or daemon start, each found by its
        table's key (no scan of a large journal)."""
        tables = {row[0] for row in self._journal.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        found = [row[0] for table, query in _FIRSTS if table in tables
                 for row in [self._journal.execute(query).fetchone()] if row is not None and row[0] is not None]
        return min(found, default=math.inf)


_FIRSTS = (("events", "SELECT at FROM events ORDER BY id LIMIT 1"),
           ("ledger", "SELECT at FROM ledger ORDER BY seq LIMIT 1"),
           ("daemon_spans", "SELECT started FROM daemon_spans ORDER BY started LIMIT 1"))
