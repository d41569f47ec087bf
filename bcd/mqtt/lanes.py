"""Commands carried out side by side: one lane per service, so a failover waiting for its lock in etcd holds
up only later commands for the same service, and a bound on how many are in flight at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import structlog

log = structlog.get_logger("bcd.mqtt")

Job = Callable[[], Awaitable[None]]


class Lanes:
    """Runs jobs as tasks. Jobs of one lane run one at a time, in the order they were started; jobs of
    different lanes run side by side. At most `limit` jobs are in flight (running, or waiting in their lane
    behind another); `start` refuses one more. A job that fails or is cancelled does not stop its lane."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()  # held here: the loop keeps only weak references
        self._tails: dict[str, asyncio.Task[None]] = {}  # each lane's last job

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, lane: str, job: Job) -> bool:
        """Start `job` behind the jobs of `lane` still in flight; False, and nothing started, when `limit` jobs
        are in flight already."""
        if len(self._tasks) >= self.limit:
            return False
        task = asyncio.get_running_loop().create_task(_after(self._tails.get(lane), job),
                                                      name=f"mqtt-command {lane}")
        self._tasks.add(task)
        self._tails[lane] = task
        task.add_done_callback(partial(self._done, lane))
        return True

    def _done(self, lane: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(lane) is task:
            del self._tails[lane]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("mqtt_command_task_failed", lane=lane, exc_info=error)


async def _after(before: asyncio.Task[None] | None, job: Job) -> None:
    if before is not None and not before.done():
        await asyncio.wait([before])  # however it ends: its outcome was reported by its own task
    await job()
