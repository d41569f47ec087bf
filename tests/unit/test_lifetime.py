"""bcd.lifetime: parts start in order, each once the one before is ready, and stop in reverse, one at a time."""

from __future__ import annotations

import asyncio

import pytest

from bcd.lifetime import Lifetimes, Run, closing, hold


def part(name: str, journal: list[str], cleanup: float = 0.0) -> Run:
    async def run(ready: asyncio.Event) -> None:
        journal.append(f"{name} starting")
        await asyncio.sleep(0)  # a part may await before it is ready: the next one waits for it
        journal.append(f"{name} ready")
        ready.set()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            journal.append(f"{name} stopping")
            await asyncio.sleep(cleanup)
            journal.append(f"{name} stopped")

    return run


async def test_parts_start_in_order_and_stop_in_reverse_each_cleaned_up_before_the_next() -> None:
    journal: list[str] = []
    async with asyncio.TaskGroup() as group:
        lifetimes = Lifetimes(group)
        for name in ("first", "second", "third"):
            await lifetimes.start(name, part(name, journal, cleanup=0.01))
        journal.append("running")
        await lifetimes.stop()
    assert journal == [
        "first starting", "first ready", "second starting", "second ready", "third starting", "third ready",
        "running",
        "third stopping", "third stopped", "second stopping", "second stopped", "first stopping", "first stopped",
    ]


async def test_abandon_cancels_the_rest_at_once_and_cuts_a_slow_cleanup_short() -> None:
    journal: list[str] = []
    async with asyncio.TaskGroup() as group:
        lifetimes = Lifetimes(group)
        await lifetimes.start("quick", part("quick", journal))
        await lifetimes.start("slow", part("slow", journal, cleanup=60))
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await lifetimes.stop()
        lifetimes.abandon()
    assert journal[-3:] == ["slow stopping", "quick stopping", "quick stopped"]  # slow never said "stopped"


async def test_a_part_that_ends_before_it_is_ready_stops_the_start() -> None:
    async def quits(ready: asyncio.Event) -> None:
        return

    async with asyncio.TaskGroup() as group:
        with pytest.raises(RuntimeError, match="quits ended before it was ready"):
            await Lifetimes(group).start("quits", quits)


async def test_a_part_that_fails_fails_the_task_group_and_the_others_are_cleaned_up() -> None:
    journal: list[str] = []

    async def fails(ready: asyncio.Event) -> None:
        ready.set()
        await asyncio.sleep(0)
        raise ValueError("broken")

    with pytest.raises(ExceptionGroup) as caught:
        async with asyncio.TaskGroup() as group:
            lifetimes = Lifetimes(group)
            await lifetimes.start("steady", part("steady", journal))
            await lifetimes.start("fails", fails)
            await asyncio.sleep(1)  # cancelled by the failure
    assert [type(error) for error in caught.value.exceptions] == [ValueError]
    assert journal[-1] == "steady stopped"


async def test_closing_and_hold_release_once_cancelled() -> None:
    released: list[str] = []

    async def close() -> None:
        released.append("closed")

    async with asyncio.TaskGroup() as group:
        lifetimes = Lifetimes(group)
        await lifetimes.start("session", closing(close))
        await lifetimes.start("held", lambda ready: hold(ready, close))
        assert released == []
        await lifetimes.stop()
    assert released == ["closed", "closed"]
