"""How the daemon's long-lived parts live: one pattern for all of them, driven by the composition root.

A part is an `async def run(ready: asyncio.Event)`: it starts what it runs, sets `ready` once the next part may
rely on it, runs until cancelled, and cleans up in its own `finally` (awaiting what it must: a last MQTT
publish, final run records, a closed session). `Lifetimes` starts the parts one after another under the
root's task group, each once the one before it is ready, and stops them in the reverse order, one at a time,
each cleaned up before the next is cancelled. A part that fails fails the task group: the daemon stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, NoReturn

import structlog

Run = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


async def until_cancelled() -> NoReturn:
    """Wait for ever: the body of a part whose work runs on timers or in tasks of its own."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")  # the future is never resolved


async def hold(ready: asyncio.Event, release: Callable[[], Awaitable[object]]) -> None:
    """The whole `run` of a part that is ready at once and whose work runs on timers or in tasks of its own:
    wait until cancelled, then `release()`."""
    try:
        ready.set()
        await until_cancelled()
    finally:
        await release()


async def repeat(name: str, every: float, once: Callable[[], Awaitable[object]],
                 quiet: tuple[type[Exception], ...] = ()) -> NoReturn:
    """`once()` every `every` seconds until cancelled. An exception in `quiet` is expected (skipped); any other
    is logged as `<name>_failed` and the loop goes on: a periodic task never dies of one bad turn."""
    while True:
        try:
            await once()
        except quiet:
            pass
        except Exception:  # the one catch-all of such a loop
            structlog.get_logger("bcd").exception(f"{name}_failed")
        await asyncio.sleep(every)


def closing(close: Callable[[], Awaitable[object]]) -> Run:
    """A part that only holds a resource (a client session, an etcd client): closed at its place in the order."""
    return lambda ready: hold(ready, close)


class Lifetimes:
    """The parts of one run of the daemon, in the order they were started."""

    def __init__(self, group: asyncio.TaskGroup) -> None:
        self.group = group
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, name: str, run: Run) -> None:
        """Start `run` in the task group; return once it is ready. Raises RuntimeError if it ends before (an
        error it raised fails the task group, which cancels this wait)."""
        ready = asyncio.Event()
        task = self.group.create_task(run(ready), name=name)
        self._tasks.append(task)
        task.add_done_callback(lambda _: ready.set())
        await ready.wait()
        if task.done() and not task.cancelled() and task.exception() is None:
            raise RuntimeError(f"{name} ended before it was ready")

    async def stop(self) -> None:
        """Cancel the parts in reverse order, each cleaned up before the next is cancelled. Under a deadline
        that passes, call `abandon()`."""
        while self._tasks:
            task = self._tasks[-1]
            task.cancel()
            await asyncio.wait([task])
            self._tasks.pop()

    def abandon(self) -> None:
        """Cancel every part not yet stopped at once (one still cleaning up is cancelled again: cut short)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    """The errors in `group` and in the groups nested in it (a part's own task group nests in the root's)."""
    for error in group.exceptions:
        yield from leaves(error) if isinstance(error, BaseExceptionGroup) else (error,)
