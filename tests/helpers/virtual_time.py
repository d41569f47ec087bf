"""A fake clock for code that schedules on the event loop (named as such: a fake, for tests of timing only).

`VirtualTimeLoop` is an asyncio event loop whose `time()` jumps straight to the next timer whenever nothing is
ready to run, so a test of the scheduler's spacing over minutes runs in milliseconds, exactly, whatever the
machine's load. Only code that waits on timers and futures belongs on it: no sockets, no subprocesses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        # When nothing is ready, the next timer is due "now": jump the clock to it instead of sleeping.
        if not self._ready and self._scheduled:  # type: ignore[attr-defined]
            self._now = max(self._now, self._scheduled[0].when())  # type: ignore[attr-defined]
        super()._run_once()  # type: ignore[misc]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion on a fresh VirtualTimeLoop (its clock starts at 0)."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
