"""Making commits durable in groups, off the event loop: one fsync in a worker thread for the commits of
every caller waiting at the time.

A commit made with `sync=False` (WAL, synchronous=NORMAL) is in the WAL file but perhaps not on disk yet: it
survives kill -9, not a power cut. `WalSync.durable()` returns once every such commit counted before the call
is on disk: the WAL file is synced in a worker thread, once for every caller that asked by the end of the
event loop's iteration (one that asks during a sync waits for the next). So runs whose steps start together
wait for one fsync, not one each in turn, and the event loop goes on meanwhile: SQLite's own sync, with
synchronous=FULL, costs an fsync per commit, each holding the event loop (a disk shared with other work can
take a second for one). `soon()` does the same for what nobody waits for (a run's end).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path


class WalSync:
    """The syncs of one SQLite file in WAL mode; `commits` is counted by the journal at each unsynced commit."""

    def __init__(self, database: Path) -> None:
        self._wal = Path(f"{database}-wal")
        self._database = database
        self.commits = 0  # commits made without waiting for the disk
        self._synced = 0  # how many of them are known to be on disk
        self._wanted = 0  # how many of them `soon()` asked to be synced
        self._failed: Callable[[OSError], object] | None = None  # told of a failed sync `soon()` asked for
        self._directory_synced = False
        self._running: asyncio.Future[None] | None = None  # the sync under way in a worker thread
        self._next: asyncio.Future[None] | None = None  # done when the sync after it (or the next) ends

    @property
    def pending(self) -> int:
        """Commits not known to be on disk yet."""
        return self.commits - self._synced

    async def durable(self) -> None:
        """Return once every commit counted before the call is on disk. Raises OSError when the sync fails.
        Cancelling the caller never cancels the sync that others wait for."""
        target = self.commits
        while self._synced < target:
            await asyncio.shield(self._sync())

    def soon(self, failed: Callable[[OSError], object]) -> None:
        """Sync every commit counted so far, the caller not waiting; `failed` is told if that sync fails."""
        self._wanted, self._failed = self.commits, failed
        self._sync()

    def _sync(self) -> asyncio.Future[None]:
        """The next sync: it starts once the callbacks ready now have run and no sync is under way, and covers
        every commit counted by then (needs a running loop)."""
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            self._next.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved
            if self._running is None:
                loop.call_soon(self._launch)
        return self._next

    def _launch(self) -> None:
        done, self._next = self._next, None
        assert done is not None
        covered = self.commits
        self._running = asyncio.get_running_loop().run_in_executor(None, self._fsync)
        self._running.add_done_callback(lambda ran: self._ended(ran, done, covered))

    def _ended(self, ran: asyncio.Future[None], done: asyncio.Future[None], covered: int) -> None:
        self._running = None
        error = None if ran.cancelled() else ran.exception()
        if ran.cancelled():
            done.cancel()
        elif error is None:
            self._synced = max(self._synced, covered)
            done.set_result(None)
        else:
            done.set_exception(error)
            if isinstance(error, OSError) and self._failed is not None and covered <= self._wanted:
                self._failed(error)
        if self._next is not None:  # asked for during this sync: it covers what this one could not
            self._launch()

    def _fsync(self) -> None:
        # A WAL file is there from the first write until the journal closes; without one, the commits are in
        # the database file itself. Its directory entry is made durable once (a new WAL file's name).
        try:
            _fsync(self._wal)
        except FileNotFoundError:
            _fsync(self._database)
        if not self._directory_synced:
            _fsync(self._database.parent)
            self._directory_synced = True


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
