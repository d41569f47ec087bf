"""Making commits durable in groups: one fsync for every commit that needs it in an event-loop iteration.

A commit made with `sync=False` (WAL, synchronous=NORMAL) is in the WAL file but perhaps not on disk yet: it
survives kill -9, not a power cut. `WalSync.durable()` returns once every such commit counted before the call
is on disk: the WAL file is synced once, after the callbacks ready in this iteration of the event loop, for
every caller waiting by then. So runs whose steps start together wait for one fsync, not one each in turn
(SQLite's own sync, with synchronous=FULL, costs one fsync per commit, each holding the event loop).
That sync is made on the loop's thread: handing it to a worker thread costs two thread wake-ups, which on a
busy machine take longer than the fsync itself. What nobody waits for (a run's end) is synced by `soon()` in a
worker thread instead, the event loop going on meanwhile.
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
        self._directory_synced = False
        self._next: asyncio.Future[None] | None = None  # the sync due at the end of this loop iteration
        self._background: asyncio.Future[None] | None = None  # `soon()`'s sync in a worker thread
        self._again: Callable[[OSError], object] | None = None  # `soon()` asked again meanwhile (what to tell)

    @property
    def pending(self) -> int:
        """Commits not known to be on disk yet."""
        return self.commits - self._synced

    async def durable(self) -> None:
        """Return once every commit counted before the call is on disk. Raises OSError when the sync fails.
        Cancelling the caller never cancels the sync that others wait for."""
        if self.pending:
            await asyncio.shield(self.start())

    def start(self) -> asyncio.Future[None]:
        """The sync due after the callbacks ready now, covering every commit counted by then (a running loop)."""
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            self._next.add_done_callback(lambda done: done.exception())  # retrieved: no warning if none waits
            loop.call_soon(self._sync)
        return self._next

    def soon(self, failed: Callable[[OSError], object]) -> None:
        """Sync every commit counted so far in a worker thread, the caller not waiting; `failed` is told if the
        sync fails. Asked while one is under way: another follows it."""
        if self._background is not None:
            self._again = failed
            return
        covered = self.commits
        self._background = asyncio.get_running_loop().run_in_executor(None, self._fsync)
        self._background.add_done_callback(lambda done: self._synced_soon(done, covered, failed))

    def _synced_soon(self, done: asyncio.Future[None], covered: int, failed: Callable[[OSError], object]) -> None:
        self._background = None
        error = None if done.cancelled() else done.exception()
        if error is None:
            self._synced = max(self._synced, covered)
        elif isinstance(error, OSError):
            failed(error)
        again, self._again = self._again, None
        if again is not None and not done.cancelled():
            self.soon(again)

    def _sync(self) -> None:
        done, self._next = self._next, None
        assert done is not None
        covered = self.commits
        try:
            self._fsync()
        except OSError as exc:
            done.set_exception(exc)
            return
        self._synced = max(self._synced, covered)
        done.set_result(None)

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
