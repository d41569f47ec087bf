"""The command inbox: bounded, replies to signed commands first, and every drop counted."""

from __future__ import annotations

import asyncio

import aiomqtt

from bcd.mqtt.client import arrivals
from bcd.mqtt.commands import Command, CommandAction
from bcd.mqtt.inbox import Inbox, Reply


def command(command_id: str) -> Command:
    return Command(command_id, CommandAction.ACK, "seen", "olive", 0.0, service="payroll")


async def test_commands_wait_in_order_up_to_the_limit() -> None:
    inbox = Inbox(commands=2)
    assert inbox.offer(command("a")) and inbox.offer(command("b"))
    assert not inbox.offer(command("c"))
    assert len(inbox) == 2
    assert [(await inbox.next_command()).id for _ in range(2)] == ["a", "b"]
    assert inbox.offer(command("c"))


async def test_replies_to_signed_commands_go_first_and_push_out_junk_when_full() -> None:
    inbox = Inbox(replies=3)
    for reply in (Reply("invalid", "refused: not JSON"), Reply("j1", "refused: unsigned"),
                  Reply("s1", "accepted: x", signed=True)):
        inbox.reply(reply)
    inbox.reply(Reply("s2", "dropped: too many", signed=True))  # full: the oldest junk reply goes
    inbox.reply(Reply("j2", "refused: unsigned"))  # full, and junk: dropped
    assert inbox.stats.dropped_replies == 2
    order = [(await inbox.next_reply()).to for _ in range(3)]
    assert order == ["s1", "s2", "j1"]


async def test_a_reply_that_does_not_fit_among_signed_ones_is_dropped_and_counted() -> None:
    inbox = Inbox(replies=1)
    inbox.reply(Reply("s1", "accepted", signed=True))
    inbox.reply(Reply("s2", "accepted", signed=True))
    assert inbox.stats.dropped_replies == 1
    inbox.reply_again(Reply("s0", "accepted", signed=True))  # a failed publication goes first again
    assert [(await inbox.next_reply()).to for _ in range(2)] == ["s0", "s1"]


async def test_next_command_waits_for_an_offer() -> None:
    inbox = Inbox()
    waiting = asyncio.create_task(inbox.next_command())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.offer(command("late"))
    assert (await asyncio.wait_for(waiting, 1)).id == "late"


async def test_arrivals_hand_each_message_on_and_queue_none() -> None:
    taken: list[aiomqtt.Message] = []
    queue = arrivals(taken.append)(maxsize=1)
    for mid in range(3):  # more than maxsize: nothing is queued, so nothing can overflow
        queue.put_nowait(aiomqtt.Message("bcd/commands", b"{}", 1, False, mid, None))
    await queue.put(aiomqtt.Message("bcd/commands", b"{}", 1, False, 3, None))
    assert [message.mid for message in taken] == [0, 1, 2, 3]
    assert queue.qsize() == 0
