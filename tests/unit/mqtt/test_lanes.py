"""Commands side by side: `Lanes` keeps each service's commands in order and bounds those in flight, and the
reader refuses (with a reply, counted as `busy`) a command that finds the bound reached, while a command of
another service is answered although one waits (a fake Operations that holds a service's commands at a gate)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bcd.authority import TRUSTED, Actor
from bcd.mqtt.inbox import Reply
from bcd.mqtt.lanes import Job, Lanes
from bcd.mqtt.reader import CommandReader
from bcd.operations import Intent, Operations, Outcome
from tests.unit.mqtt.test_commands import KEY, Live, live, message, metric, raw, signed

SHARED_FIXTURES = (live,)


class Gates:
    """Jobs that wait at a gate of their own: `log` says in which order they began and ended."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.log: list[str] = []

    def job(self, name: str) -> asyncio.Event:
        self.gates[name] = asyncio.Event()
        return self.gates[name]

    def run(self, name: str) -> Job:
        async def job() -> None:
            self.log.append(f"+{name}")
            await self.gates.setdefault(name, asyncio.Event()).wait()
            self.log.append(f"-{name}")
        return job


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_jobs_of_one_lane_run_in_order_and_other_lanes_do_not_wait_for_them() -> None:
    lanes, gates = Lanes(limit=10), Gates()
    for lane, name in (("payroll", "p1"), ("payroll", "p2"), ("library", "l1")):
        assert lanes.start(lane, gates.run(name))
    await settle()
    assert gates.log == ["+p1", "+l1"]  # p2 waits for p1; l1 does not
    gates.gates["l1"].set()
    await settle()
    assert gates.log == ["+p1", "+l1", "-l1"]
    gates.gates["p1"].set()
    await settle()
    assert gates.log == ["+p1", "+l1", "-l1", "-p1", "+p2"]
    gates.gates["p2"].set()
    await settle()
    assert len(lanes) == 0


async def test_no_more_than_limit_jobs_are_in_flight_waiting_ones_included() -> None:
    lanes, gates = Lanes(limit=2), Gates()
    assert lanes.start("payroll", gates.run("p1"))
    assert lanes.start("payroll", gates.run("p2"))  # waiting behind p1: in flight too
    assert not lanes.start("library", gates.run("l1"))
    await settle()
    assert "+l1" not in gates.log and len(lanes) == 2
    gates.gates["p1"].set()
    await settle()
    assert lanes.start("library", gates.run("l1"))  # room again
    await settle()
    assert gates.log == ["+p1", "-p1", "+p2", "+l1"]


async def test_a_job_that_fails_does_not_stop_its_lane() -> None:
    lanes, gates = Lanes(limit=10), Gates()

    async def broken() -> None:
        raise RuntimeError("a bug")

    assert lanes.start("payroll", broken)
    assert lanes.start("payroll", gates.run("p2"))
    gates.job("p2").set()
    await settle()
    assert gates.log == ["+p2", "-p2"]


class HeldOperations(Operations):
    """A fake in front of the real engine's operations: intents for a service in `held` wait at its gate
    (as a failover waits for etcd to grant its lock), the others go through at once."""

    def __init__(self, live: Live) -> None:
        super().__init__(live.engine)
        self.held: dict[str, asyncio.Event] = {}

    async def perform(self, intent: Intent, actor: Actor = TRUSTED) -> Outcome:
        gate = self.held.get(intent.service or "")
        if gate is not None:
            await gate.wait()
        return await super().perform(intent, actor)


@pytest.fixture
async def reader(live: Live) -> AsyncIterator[tuple[CommandReader, HeldOperations]]:
    operations = HeldOperations(live)
    reader = CommandReader(operations, live.output.stats, lambda: live.clock)
    reader.remember(60.0, max_in_flight=2)
    worker = asyncio.get_running_loop().create_task(reader.work())
    yield reader, operations
    worker.cancel()


def arrive(reader: CommandReader, command_id: str, service: str = "payroll") -> None:
    obj = signed(id=command_id, action="maintenance", service=service, site="dorset", duration="1h")
    if service != "payroll":
        obj = signed(id=command_id, action="ack", service=service)
    reader.arrive(message(raw(obj)), "bcd/unit/commands", KEY, 60.0)


async def test_a_command_for_another_service_is_answered_while_one_waits_and_the_bound_refuses_as_busy(
    live: Live, reader: tuple[CommandReader, HeldOperations]
) -> None:
    commands, operations = reader
    gate = operations.held["payroll"] = asyncio.Event()
    arrive(commands, "waits")
    arrive(commands, "unknown-service", service="library")  # another service: answered at once
    first = await asyncio.wait_for(commands.inbox.next_reply(), 5)
    assert first == Reply("unknown-service", "refused: no service named 'library'", signed=True)
    arrive(commands, "behind")  # payroll again: waits behind "waits" (2 in flight now)
    arrive(commands, "too-many", service="library")
    busy = await asyncio.wait_for(commands.inbox.next_reply(), 5)
    assert busy == Reply("too-many", "refused: busy: 2 commands in flight (max_in_flight); send it again later",
                         signed=True)
    assert metric(live, 'bcd_mqtt_commands_total{result="busy"}') == 1
    gate.set()
    replies = [await asyncio.wait_for(commands.inbox.next_reply(), 5) for _ in range(2)]
    assert [(reply.to, reply.text) for reply in replies] == [
        ("waits", "accepted: maintenance of dorset for 3600s"),
        ("behind", "accepted: maintenance of dorset for 3600s"),
    ]
    arrive(commands, "too-many", service="library")  # refused as busy, so its id may be sent again
    again = await asyncio.wait_for(commands.inbox.next_reply(), 5)
    assert again.to == "too-many" and again.text.startswith("refused: no service named")
