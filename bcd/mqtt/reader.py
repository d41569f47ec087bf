"""The MQTT command reader: every incoming message screened as it arrives, signed commands carried out side
by side (in order for each service, see `Lanes`), every one answered on `replies/<id>` (or `replies/invalid`)
and counted.

Nothing is dropped silently: what cannot be read is refused; what does not fit in the inbox is answered
`dropped: …` and counted as `dropped`; a command that finds `max_in_flight` in flight is answered
`refused: busy: …` and counted as `busy`; a reply that cannot be kept is counted in `dropped_replies`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import structlog

from bcd.config.mqtt import MAX_IN_FLIGHT
from bcd.mqtt.commands import Command, Keys, RecentIds, Refusal, verify
from bcd.mqtt.execute import execute
from bcd.mqtt.inbox import Inbox, Reply
from bcd.mqtt.lanes import Lanes
from bcd.mqtt.stats import MqttStats
from bcd.operations import Operations

if TYPE_CHECKING:
    import aiomqtt

log = structlog.get_logger("bcd.mqtt")

REPLY_WINDOW = 32  # replies awaiting their PUBACK at once


class CommandReader:
    """Reads commands for `MqttOutput`; the inbox, the replay memory and the commands in flight outlive a
    session, so what was accepted before a lost link is carried out and answered after it."""

    def __init__(self, operations: Operations, stats: MqttStats, clock: Callable[[], float] = time.time) -> None:
        self.operations = operations
        self.stats = stats
        self.clock = clock
        self.seen: RecentIds | None = None
        self.max_age = 60.0
        self.inbox = Inbox(stats=stats)
        self.lanes = Lanes(MAX_IN_FLIGHT)  # the commands in flight

    def remember(self, max_age: float, max_in_flight: int | None = None) -> None:
        """Adopt a (new) `max_age`: ids are kept for twice the longest one seen, never forgotten early; and a
        (new) `max_in_flight`: commands already in flight beyond it are not cut short."""
        self.max_age = max_age
        if max_in_flight is not None:
            self.lanes.limit = max_in_flight
        if self.seen is None:
            self.seen = RecentIds(max_age)
        self.seen.keep = max(self.seen.keep, 2 * max_age + 1)

    def close(self) -> None:
        """MQTT is stopped or removed: what still waits is dropped, counted and logged (no reply can go)."""
        commands, replies = self.inbox.clear()
        self.stats.commands["dropped"] += commands
        self.stats.dropped_replies += replies
        if commands or replies:
            log.warning("mqtt_commands_dropped", commands=commands, replies=replies,
                        why="MQTT stopped before they were carried out or answered")

    async def watch_link(self, client: aiomqtt.Client) -> None:
        """Wait for the link to be lost: `arrivals` hands every message on at once, so none is queued here."""
        async for _ in client.messages:
            pass

    def arrive(self, message: aiomqtt.Message, topic: str, key: Keys | None, max_age: float) -> None:
        """Screen one incoming message as it arrives (paho's callback: quick, and it must not raise)."""
        try:
            if message.topic.value != topic:
                return
            payload = message.payload
            raw = bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()
            verdict = self.screen(raw, key, retained=bool(message.retain), max_age=max_age)
            if isinstance(verdict, Reply):
                self.inbox.reply(verdict)
            elif not self.inbox.offer(verdict):
                self._drop(verdict)
        except Exception:
            self.stats.commands["refused"] += 1
            log.exception("mqtt_command_unreadable", hint="refused; no reply")

    def _drop(self, command: Command) -> None:
        waiting = len(self.inbox)
        self._turn_away(command, "dropped", "dropped", f"too many commands in flight ({waiting} waiting)",
                        waiting=waiting)

    def _turn_away(self, command: Command, result: str, verdict: str, why: str, **fields: object) -> None:
        """Answer a command that was never acted on (`<verdict>: <why>; send it again later`), log it
        (`mqtt_command_<verdict>`), count it as `result`, and forget its id: a resend with it is welcome."""
        if self.seen is not None:
            self.seen.forget(command.id)
        self.stats.commands[result] += 1
        log.warning(f"mqtt_command_{verdict}", id=command.id, action=str(command.action), service=command.service,
                    why=why, **fields)
        self.inbox.reply(Reply(command.id, f"{verdict}: {why}; send it again later", signed=True))

    async def work(self) -> None:
        """Hand each waiting command, in arrival order, to its service's lane: a command waits only for those
        of its own service before it (a failover waiting for its lock in etcd holds up no other service). One
        that finds `max_in_flight` in flight is refused as busy. A lost link cuts none short: they run on as
        tasks of their own, and their replies wait in the inbox for the next session."""
        while True:
            command = await self.inbox.next_command()
            if not self.lanes.start(lane_of(command), partial(self._answer, command)):
                self._turn_away(command, "busy", "refused", f"busy: {self.lanes.limit} commands in flight "
                                                            "(max_in_flight)", in_flight=len(self.lanes))
            await asyncio.sleep(0)  # a command that needs no wait (ack) ends here: a burst does not fill the lanes

    async def _answer(self, command: Command) -> None:
        age = self.clock() - command.ts
        if age > self.max_age:  # it waited too long in the inbox: its sender may have given up on it
            self.stats.commands["refused"] += 1
            log.warning("mqtt_command_refused", id=command.id, why="stale after waiting in the inbox", age=age)
            self.inbox.reply(Reply(command.id, f"refused: stale: ts is {age:.0f}s old after waiting in the inbox "
                                               f"(max_age {self.max_age:g}s)", signed=True))
            return
        self.inbox.reply(await self.carry_out(command))

    async def send_replies(self, client: aiomqtt.Client, prefix: str) -> None:
        """Publish replies, up to REPLY_WINDOW awaiting their PUBACK at once."""
        window = asyncio.Semaphore(REPLY_WINDOW)
        async with asyncio.TaskGroup() as sending:
            while True:
                reply = await self.inbox.next_reply()
                await window.acquire()
                sending.create_task(self._send_reply(client, prefix, reply, window))

    async def _send_reply(self, client: aiomqtt.Client, prefix: str, reply: Reply,
                          window: asyncio.Semaphore) -> None:
        try:
            await client.publish(f"{prefix}/replies/{reply.to}", reply.text.encode(), qos=1)
        except BaseException:
            self.inbox.reply_again(reply)
            raise
        finally:
            window.release()
        self.stats.published += 1

    async def handle(self, raw: bytes, key: Keys | None, *, retained: bool, max_age: float) -> tuple[str, str]:
        """Screen and carry out one command payload: (reply topic suffix, reply text)."""
        verdict = self.screen(raw, key, retained=retained, max_age=max_age)
        reply = verdict if isinstance(verdict, Reply) else await self.carry_out(verdict)
        return reply.to, reply.text

    def screen(self, raw: bytes, key: Keys | None, *, retained: bool, max_age: float) -> Command | Reply:
        """Verify one payload and record its id: the Command to carry out, or the Reply refusing it (counted,
        logged). Never raises: whatever goes wrong while reading a payload is a refusal."""
        try:
            verdict = self._verify(raw, key, retained, max_age)
        except Exception as exc:
            log.exception("mqtt_command_unreadable", size=len(raw))
            verdict = Refusal(None, f"unreadable: {type(exc).__name__}")
        if isinstance(verdict, Command):
            return verdict
        self.stats.commands["refused"] += 1
        log.warning("mqtt_command_refused", id=verdict.id, why=verdict.reason, retained=retained, size=len(raw))
        return Reply(verdict.id or "invalid", f"refused: {verdict.reason}", verdict.signed)

    def _verify(self, raw: bytes, key: Keys | None, retained: bool, max_age: float) -> Command | Refusal:
        now = self.clock()
        if self.seen is None:
            self.remember(max_age)
        seen = self.seen
        assert seen is not None
        verdict = verify(raw, key or b"", now, seen, max_age=max_age, retained=retained)
        if key is None:  # still verified above, for the id to reply to
            return Refusal(verdict.id, "commands unavailable: the hmac key cannot be read")
        if isinstance(verdict, Command) and not seen.add(verdict.id, now):
            return Refusal(verdict.id, "too many recent commands: try again later", signed=True)
        return verdict

    async def carry_out(self, command: Command) -> Reply:
        """Act on a verified command: the reply saying what happened or why not (counted, logged)."""
        try:
            accepted, detail = await execute(self.operations, command)
        except Exception as exc:
            log.exception("mqtt_command_failed", id=command.id, action=str(command.action))
            accepted, detail = False, f"internal error: {type(exc).__name__}"
        self.stats.commands["accepted" if accepted else "refused"] += 1
        log_fields = {"id": command.id, "action": str(command.action), "service": command.service,
                      "by": f"mqtt:{command.by}", "run": command.run, "reason": command.reason}
        if accepted:
            log.info("mqtt_command_accepted", detail=detail, **log_fields)
        else:
            log.warning("mqtt_command_refused", why=detail, **log_fields)
        return Reply(command.id, f"{'accepted' if accepted else 'refused'}: {detail}", signed=True)


def lane_of(command: Command) -> str:
    """Commands for one service are carried out in order; an approve or abort naming no service is its run's."""
    return command.service if command.service is not None else f"run {command.run}"
