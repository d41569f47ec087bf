"""A run's hold on its service's lock (the runner's `RunFence`): `{fence_token}` is the lock's token, every
step is recorded in the store (fenced) before it runs, and runs only while the lock is valid less a safety
margin."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

from bcd.cluster.records import RemoteRun, RemoteStep
from bcd.coordination import CoordinationUnavailable, Coordinator, Lock, run_key
from bcd.runbooks.runner import LostLock


class Fence:
    """Keeps the run's record (`record`, replaced as the run goes on) and writes it, fenced by `lock`."""

    def __init__(self, coordinator: Coordinator, lock: Lock, record: RemoteRun, *, clock: Callable[[], float],
                 margin: float) -> None:
        self._coordinator = coordinator
        self._clock = clock
        self._margin = margin  # steps stop this long before the lock's validity ends
        self.lock = lock
        self.record = record
        self._lost = asyncio.Event()
        self._why = ""
        self._writes = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def token(self) -> int:
        return self.lock.token

    @property
    def key(self) -> str:
        return run_key(self.lock.service, str(self.lock.token))

    def lose(self, why: str) -> None:
        if not self._lost.is_set():
            self._why = why
            self._lost.set()

    def problem(self) -> str | None:
        """Why the run may not go on (None while the lock is valid beyond the safety margin)."""
        if self._lost.is_set():
            return self._why
        now = self._clock()
        if not self.lock.valid(now) or now >= self.lock.valid_until - self._margin:
            return f"the lock of {self.lock.service} (token {self.token}) ran out"
        return None

    async def write(self) -> None:
        """Write the record as it is now; LostLock when the fence refuses it, CoordinationUnavailable when
        the store could not be asked."""
        async with self._writes:
            written = await self._coordinator.fenced_put(self.lock, self.key, self.record.to_json())
        if not written:
            self.lose(f"the fence refused the record of {self.lock.service} (token {self.token}): "
                      "another instance holds the lock")
            raise LostLock(self._why)

    async def write_while_valid(self) -> None:
        """Write the record, retrying while the store does not answer and the lock is still valid."""
        while True:
            problem = self.problem()
            if problem is not None:
                raise LostLock(problem)
            try:
                await self.write()
                return
            except CoordinationUnavailable:
                await asyncio.sleep(0.1)

    async def before_step(self, run_id: int, seq: int, phase: str, step: str) -> None:
        problem = self.problem()
        if problem is not None:
            raise LostLock(f"{problem} before step {seq} {step!r}")
        self.record = replace(self.record, steps=(*self.record.steps, RemoteStep(seq, phase, step)),
                              step=RemoteStep(seq, phase, step))
        await self.write_while_valid()

    def after_step(self, run_id: int, seq: int, phase: str, step: str, outcome: str) -> None:
        steps = tuple(replace(item, outcome=outcome) if item.seq == seq else item for item in self.record.steps)
        self.record = replace(self.record, steps=steps)
        if self.problem() is None:
            task = asyncio.get_running_loop().create_task(self._write_quietly())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write_quietly(self) -> None:
        with contextlib.suppress(LostLock, CoordinationUnavailable):
            await self.write()

    async def expired(self) -> str:
        while True:
            problem = self.problem()
            if problem is not None:
                return problem
            left = self.lock.valid_until - self._margin - self._clock()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, min(left, 0.5))):  # validity moves on with each keepalive
                    await self._lost.wait()
