"""A function run in a thread of its own that never delays the process's exit (the daemon's config reloads)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def in_daemon_thread(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread of its own that never delays the exit: a thread cannot be stopped, and
    asyncio.to_thread's executor is joined when the loop closes, so SIGTERM during a long reload waited for
    it. A daemon thread is left behind at exit; its result, if it comes after the loop closed, is dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    threading.Thread(target=_deliver, args=(loop, future, function, args), name="bcd-reload", daemon=True).start()
    try:
        return await future
    finally:
        # The frames an exception passed through stay in its traceback: none of them may hold the future, which
        # holds the exception (such a cycle would keep a failed load's data alive until a rare full collection).
        del future


def _deliver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], function: Callable[..., Any],
             args: tuple[Any, ...]) -> None:
    setter: Callable[[Any], object]
    value: object
    try:
        setter, value = future.set_result, function(*args)
    except Exception as exc:  # raised in the awaiting task
        setter, value = future.set_exception, exc
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
        loop.call_soon_threadsafe(_settle, future, setter, value)
    del future, setter, value  # (see in_daemon_thread)


def _settle(future: asyncio.Future[Any], setter: Callable[[Any], object], value: object) -> None:
    if not future.cancelled():  # the reload task was cancelled (shutdown)
        setter(value)
