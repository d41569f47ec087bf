"""LocalCoordinator: the single-instance default, with fencing tokens kept in a real SQLite file."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from bcd.coordination import Coordinator, LocalCoordinator, Lock, active_key, run_key
from bcd.journal import Journal


async def test_tokens_grow_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    tokens = []
    for _ in range(3):  # three incarnations of the daemon on the same file
        coordinator = LocalCoordinator(path)
        await coordinator.start()
        lock = await coordinator.acquire("web")
        assert lock is not None
        tokens.append(lock.token)
        await coordinator.stop()  # a crash would leave no trace either: the lock lives in memory only
    assert tokens == sorted(tokens) and len(set(tokens)) == 3


async def test_one_run_per_service(tmp_path: Path) -> None:
    coordinator: Coordinator = LocalCoordinator(tmp_path / "journal.db", clock=lambda: 100.0)
    await coordinator.start()
    try:
        first = await coordinator.acquire("web")
        assert first is not None
        assert await coordinator.acquire("web") is None
        other = await coordinator.acquire("db")
        assert other is not None and other.token > first.token
        assert first.valid(100.0) and first.remaining(100.0) == math.inf and coordinator.available

        assert await coordinator.fenced_put(first, run_key("web", "7"), b"started")
        await coordinator.release(first)
        assert not first.valid(100.0) and first.valid_until == 100.0
        assert await coordinator.fenced_put(first, run_key("web", "7"), b"stale") is False

        second = await coordinator.acquire("web")
        assert second is not None and second.token > other.token
        assert await coordinator.fenced_put(Lock("web", first.token, math.inf), active_key("web"), b"x") is False
        assert await coordinator.fenced_put(second, active_key("web"), b"hampshire")
        assert await coordinator.read("runs/web/") == {"runs/web/7": b"started"}
        assert await coordinator.read("active/") == {"active/web": b"hampshire"}
        with pytest.raises(ValueError, match="relative"):
            await coordinator.fenced_put(second, "/abs", b"x")
    finally:
        await coordinator.stop()


async def test_shares_the_journal_file_and_its_connection(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.db"
    journal = Journal(path)  # the daemon's journal creates the file and its tables
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        coordinator = LocalCoordinator(connection)
        connection.execute("BEGIN")  # a transaction of the owner's is open: the token goes into it
        lock = await coordinator.acquire("web")
        connection.execute("COMMIT")
        assert lock is not None
        await coordinator.stop()  # does not close a connection it was given
        again = await LocalCoordinator(connection).acquire("web")
        assert again is not None and again.token == lock.token + 1
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"events", "coordination_counter", "coordination_records"} <= tables
    finally:
        connection.close()
        journal.close()


async def test_views_are_only_our_own() -> None:
    now = [10.0]
    coordinator = LocalCoordinator(":memory:", vantage="dorset", clock=lambda: now[0])
    assert coordinator.views() == {}
    await coordinator.publish_view(b'{"web": "up"}')
    now[0] = 12.5
    assert coordinator.views() == {"dorset": (b'{"web": "up"}', 2.5)}
    await coordinator.withdraw_view()
    assert coordinator.views() == {}
    await coordinator.stop()


async def test_fenced_delete_and_no_view_revisions(tmp_path: Path) -> None:
    coordinator: Coordinator = LocalCoordinator(tmp_path / "journal.db", clock=lambda: 100.0)
    lock = await coordinator.acquire("web", {"hampshire": 7})  # no other vantage to check: the lock is taken
    assert lock is not None
    for run in ("1", "2", "3"):
        assert await coordinator.fenced_put(lock, run_key("web", run), b"done")
    assert await coordinator.fenced_delete(lock, [run_key("web", "1"), run_key("web", "2")])
    assert await coordinator.read("runs/web/") == {"runs/web/3": b"done"}
    await coordinator.release(lock)
    assert await coordinator.fenced_delete(lock, [run_key("web", "3")]) is False
    assert await coordinator.read("runs/web/") == {"runs/web/3": b"done"}
    assert coordinator.view_revisions() == {}
    await coordinator.stop()
