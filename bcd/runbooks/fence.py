"""A run's hold on its service's cluster lock, as a step sees it: `LostLock` when it runs out, and `under_lock`,
which awaits a step but no longer than the lock (the run's `RunFence`, bcd.runbooks.runner)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol, cast

from bcd.runbooks.steps.base import StepOutcome


class LostLock(Exception):
    """The run's lock is no longer valid (or its fenced record was refused): stop, run no further step."""


class Expiring(Protocol):
    """What `under_lock` needs of a run's fence (the runner's `RunFence`)."""

    async def expired(self) -> str: ...


async def under_lock(fence: Expiring | None, work: Any) -> StepOutcome:
    """Await the step `work`; with a fence, cancel it and raise LostLock as soon as the lock runs out."""
    if fence is None:
        result: StepOutcome = await work
        return result
    step = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(fence.expired())
    try:
        await asyncio.wait({step, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not step.done():
            step.cancel()  # a command step kills its process group on cancellation
            with contextlib.suppress(asyncio.CancelledError):
                await step
    if step.cancelled() and watch.done() and not watch.cancelled():
        raise LostLock(watch.result())
    return cast(StepOutcome, step.result())
