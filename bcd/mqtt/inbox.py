"""The command inbox: verified commands waiting to be carried out, and replies waiting to be published.

aiomqtt queues every incoming message before anyone reads it, and drops what overflows that queue with only
a log warning. bcd hands aiomqtt a queue class that queues nothing (`bcd.mqtt.client.arrivals`): each
message is screened as it arrives (size, brackets, JSON, signature: microseconds), junk is refused there,
and only signed commands wait here, in a bounded queue whose overflow is refused with a reply and counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from bcd.mqtt.commands import Command
from bcd.mqtt.stats import MqttStats

PENDING_COMMANDS = 1000
PENDING_REPLIES = 10_000  # as many as the replay memory holds ids: each signed command can be answered


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply: published on `replies/<to>` (`to` is the command's id, or `invalid`). `signed`: it answers a
    command with a good signature, so it goes before replies to junk and is the last to be dropped."""

    to: str
    text: str
    signed: bool = False


class Inbox:
    """Bounded: `offer` refuses a command when `PENDING_COMMANDS` wait; a reply that does not fit pushes out
    the oldest reply to junk, or is dropped (counted in `stats.dropped_replies`) when only signed ones wait."""

    def __init__(self, commands: int = PENDING_COMMANDS, replies: int = PENDING_REPLIES,
                 stats: MqttStats | None = None) -> None:
        self.command_limit = commands
        self.reply_limit = replies
        self.stats = stats if stats is not None else MqttStats()
        self._commands: deque[Command] = deque()
        self._signed: deque[Reply] = deque()
        self._unsigned: deque[Reply] = deque()
        self._command_ready = asyncio.Event()
        self._reply_ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._commands)

    def offer(self, command: Command) -> bool:
        """Queue a verified command; False (nothing queued) when the queue is full."""
        if len(self._commands) >= self.command_limit:
            return False
        self._commands.append(command)
        self._command_ready.set()
        return True

    async def next_command(self) -> Command:
        """The oldest waiting command (commands are carried out one at a time, in arrival order)."""
        while not self._commands:
            self._command_ready.clear()
            await self._command_ready.wait()
        return self._commands.popleft()

    def reply(self, reply: Reply) -> None:
        if len(self._signed) + len(self._unsigned) >= self.reply_limit:
            if not (reply.signed and self._unsigned):
                self.stats.dropped_replies += 1
                return
            self._unsigned.popleft()
            self.stats.dropped_replies += 1
        (self._signed if reply.signed else self._unsigned).append(reply)
        self._reply_ready.set()

    def reply_again(self, reply: Reply) -> None:
        """Put back a reply whose publication failed (the link was lost): it goes first after reconnecting."""
        (self._signed if reply.signed else self._unsigned).appendleft(reply)
        self._reply_ready.set()

    async def next_reply(self) -> Reply:
        """The next reply to publish: replies to signed commands first."""
        while not (self._signed or self._unsigned):
            self._reply_ready.clear()
            await self._reply_ready.wait()
        return self._signed.popleft() if self._signed else self._unsigned.popleft()

    def clear(self) -> tuple[int, int]:
        """Forget everything waiting: (commands, replies) forgotten."""
        counts = len(self._commands), len(self._signed) + len(self._unsigned)
        self._commands.clear()
        self._signed.clear()
        self._unsigned.clear()
        return counts
