"""Coordination for a single instance (no `cluster:` section): everything is in this process.

Locks are held in memory and never expire; their fencing tokens come from a counter in SQLite (by default a
small table in the daemon's journal file), so tokens keep growing across restarts and a downstream system
that remembers the highest token it saw keeps refusing a previous incarnation's stale executor. Fenced
records go to the same file. The only view is our own.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from bcd.coordination.base import Lock

SCHEMA = """
CREATE TABLE IF NOT EXISTS coordination_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS coordination_records (key TEXT PRIMARY KEY, value BLOB NOT NULL, token INTEGER NOT NULL);
"""


class LocalCoordinator:
    """The Coordinator of a lone instance. `db` is a path to an SQLite file (opened in WAL mode with full
    sync, like the journal) or an open connection to share (the journal's; used from the event loop thread
    only, and never closed here)."""

    def __init__(
        self,
        db: sqlite3.Connection | str | Path,
        *,
        vantage: str = "local",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(db, sqlite3.Connection):
            self._db, self._owned = db, False
        else:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._owned = True
        self._db.executescript(SCHEMA)
        self.vantage = vantage
        self._clock = clock
        self._held: dict[str, Lock] = {}
        self._view: tuple[bytes, float] | None = None

    @property
    def available(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        now = self._clock()
        for lock in self._held.values():
            lock.end(now)
        self._held.clear()
        self._view = None
        if self._owned:
            self._db.close()

    def _next_token(self) -> int:
        # a savepoint works inside and outside a transaction the shared connection may have open
        self._db.execute("SAVEPOINT coordination_token")
        try:
            self._db.execute(
                "INSERT INTO coordination_counter (name, value) VALUES ('fence', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            row = self._db.execute("SELECT value FROM coordination_counter WHERE name = 'fence'").fetchone()
        except BaseException:
            self._db.execute("ROLLBACK TO coordination_token")
            self._db.execute("RELEASE coordination_token")
            raise
        self._db.execute("RELEASE coordination_token")
        return int(row[0])

    async def acquire(self, service: str, views: Mapping[str, int] | None = None) -> Lock | None:
        # `views` has nothing to check: there are no other vantages, and view_revisions() is empty
        if service in self._held:
            return None
        lock = Lock(service, self._next_token(), math.inf)
        self._held[service] = lock
        return lock

    async def release(self, lock: Lock) -> None:
        if self._held.get(lock.service) is lock:
            del self._held[lock.service]
        lock.end(self._clock())

    async def fenced_put(self, lock: Lock, key: str, value: bytes) -> bool:
        if not self._holds(lock, [key]):
            return False
        self._db.execute(
            "INSERT INTO coordination_records (key, value, token) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, token = excluded.token",
            (key, value, lock.token),
        )
        return True

    async def fenced_delete(self, lock: Lock, keys: Sequence[str]) -> bool:
        if not self._holds(lock, keys):
            return False
        self._db.executemany("DELETE FROM coordination_records WHERE key = ?", [(key,) for key in keys])
        return True

    def _holds(self, lock: Lock, keys: Sequence[str]) -> bool:
        for key in keys:
            if not key or key.startswith("/") or ".." in key.split("/"):
                raise ValueError(f"{key!r} is not a relative coordination key")
        return self._held.get(lock.service) is lock and lock.valid(self._clock())

    async def read(self, prefix: str) -> dict[str, bytes]:
        rows = self._db.execute(
            "SELECT key, value FROM coordination_records WHERE substr(key, 1, ?) = ? ORDER BY key",
            (len(prefix), prefix),
        ).fetchall()
        return {str(key): bytes(value) for key, value in rows}

    async def publish_view(self, view_json: bytes) -> None:
        self._view = (view_json, self._clock())

    async def withdraw_view(self) -> None:
        self._view = None

    def views(self) -> dict[str, tuple[bytes, float]]:
        if self._view is None:
            return {}
        value, at = self._view
        return {self.vantage: (value, max(0.0, self._clock() - at))}

    def view_revisions(self) -> dict[str, int]:
        return {}
