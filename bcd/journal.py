"""The SQLite store under `state_dir`: current health and status, and the event journal.

WAL mode with synchronous=FULL: a committed row survives kill -9 and power loss. Writes happen on
transitions and decisions (rare), never per observation; the engine groups the writes of one event-loop
iteration into one transaction (group commit), so a burst of transitions costs one fsync, not one each.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcd.model import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS site_health (
    service TEXT NOT NULL, site TEXT NOT NULL,
    base TEXT NOT NULL, flapping INTEGER NOT NULL, maintenance_until REAL, maintenance_reason TEXT NOT NULL,
    since REAL NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (service, site)
);
CREATE TABLE IF NOT EXISTS service_state (
    service TEXT PRIMARY KEY, status TEXT NOT NULL, active TEXT NOT NULL, since REAL NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    service TEXT, site TEXT, reason TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_service ON events (service, id);
"""


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
    """One connection, used from the event loop thread only."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit (one fsync): all or nothing."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, params)

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
        cursor = self._db.execute(
            "INSERT INTO events (at, kind, service, site, reason, data) VALUES (?, ?, ?, ?, ?, ?)",
            (event.at, event.kind, event.service, event.site, event.reason, json.dumps(event.data)),
        )
        return Event(event.kind, event.at, event.service, event.site, event.reason, event.data, cursor.lastrowid)

    def events(self, after: int = 0, service: str | None = None, limit: int = 100) -> list[Event]:
        sql = "SELECT id, at, kind, service, site, reason, data FROM events WHERE id > ?"
        params: list[Any] = [after]
        if service is not None:
            sql += " AND service = ?"
            params.append(service)
        rows = self._db.execute(sql + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [Event(r[2], r[1], r[3], r[4], r[5], json.loads(r[6]), r[0]) for r in rows]
