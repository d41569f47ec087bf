"""MQTT output: live state and events for other systems, and signed operator commands.

Under `<prefix>` (default `bcd/<instance>`):
- `status`: retained `online` while connected; the Will (and a clean stop) leaves a retained `offline`;
- `services/<name>`: retained JSON state of each service, re-published whenever it changes and after
  every (re)connect;
- `events`: every bus event as JSON (QoS 1, not retained), kept in a bounded buffer while the broker is away;
- `commands` (only when enabled): HMAC-signed JSON commands, each answered on `replies/<id>`.

One session is one connection and four parts under one TaskGroup: the publisher (state, events), the link
watcher, the command worker and the reply sender. `bcd_mqtt_connected` is 1 only while all four run; a part
that ends restarts the session. Each incoming message is screened as it arrives (`screen`: pure checks of
`bcd.mqtt.commands`, never raising); signed commands wait in the bounded `Inbox` and are carried out side by
side, in arrival order for each service, at most `max_in_flight` at once (`Lanes`, `execute`).

The broker being away never stops the daemon: connection attempts back off with full jitter (tenacity),
events wait in a bounded deque (what falls out is counted), and the state is re-sent after each connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never, wait_random_exponential

from bcd.broker import BrokerLink, broker_link
from bcd.bus import Bus, Subscription
from bcd.config import Config, MqttSettings
from bcd.events import Event
from bcd.lazy import lazy_import
from bcd.lifetime import hold
from bcd.mqtt.client import connected, refused
from bcd.mqtt.commands import Keys
from bcd.mqtt.keys import signing_keys
from bcd.mqtt.reader import CommandReader
from bcd.mqtt.stats import MqttStats
from bcd.operations import Operations
from bcd.view import EstateView, service_json

if TYPE_CHECKING:
    import aiomqtt
else:  # loaded on first use: only configs with an mqtt section need it
    aiomqtt = lazy_import("aiomqtt")

log = structlog.get_logger("bcd.mqtt")

STATE_KINDS = frozenset({"site_transition", "service_status", "active_changed", "acknowledged"})
CALL_TIMEOUT = 10.0  # publish / subscribe / disconnect acknowledgements
STOP_TIMEOUT = 2.0
FLUSH_ON_STOP = 1.0
STABLE_AFTER = 2.0  # a connection that lived this long resets the backoff when it is lost


# ---------------------------------------------------------------------------------------------------------
# The connection


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect waits: random in [0, min(maximum, initial * 2**n)] after the n-th failure in a row."""

    initial: float = 0.5
    maximum: float = 30.0


@dataclass(frozen=True, slots=True)
class _Target:
    """One connection attempt's settings, with credentials read from their files."""

    link: BrokerLink
    prefix: str
    commands: bool
    key: Keys | None
    max_age: float


def topic_prefix(settings: MqttSettings, instance: str) -> str:
    return settings.topic_prefix or f"bcd/{instance}"


class MqttOutput:
    """Keeps one connection to the broker of `config.mqtt` (see the module docstring).

    `apply(config)` starts it, changes its settings (reconnecting when they differ) or stops it when
    `mqtt:` is gone; `stop()` (at the end of `run()`) publishes `offline` and disconnects cleanly.
    """

    def __init__(self, estate: EstateView, operations: Operations, bus: Bus, *,
                 clock: Callable[[], float] = time.time, backoff: Backoff = Backoff()) -> None:
        self.estate = estate
        self.bus = bus
        self.clock = clock
        self.backoff = backoff
        self.stats = MqttStats()
        self.settings: MqttSettings | None = None
        self.instance = ""
        self._events: deque[Event] = deque(maxlen=1000)
        self._dirty: set[str] = set()
        self._published_services: set[str] = set()
        self.reader = CommandReader(operations, self.stats, clock)
        self._wake = asyncio.Event()
        self._leave = asyncio.Event()
        self._stopping = False
        self._subscription: Subscription | None = None
        self._bus_drops = 0  # of the subscription's drops, those counted in stats.dropped
        self._pump: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._client_id = f"bcd-{os.getpid()}-{os.urandom(3).hex()}"

    # -- control ---------------------------------------------------------------------------------------
    def apply(self, config: Config) -> None:
        """Adopt `config.mqtt` (and the instance name): start, reconnect with new settings, or stop."""
        settings, instance = config.mqtt, config.instance
        if settings is None:
            if self.settings is not None:
                log.info("mqtt_disabled")
                self.settings = None
                self.stats.enabled = False
                self._request_leave()
            return
        changed = (settings, instance) != (self.settings, self.instance)
        if self.settings is not None and changed:
            log.info("mqtt_settings_changed", hint="reconnecting with the new settings")
            self._request_leave()
        if self._events.maxlen != settings.buffer:
            kept = deque(self._events, maxlen=settings.buffer)
            self.stats.dropped += len(self._events) - len(kept)
            self._events = kept
        self.reader.remember(settings.commands.max_age, settings.commands.max_in_flight)
        self.settings, self.instance = settings, instance
        self.stats.enabled = True
        self._stopping = False
        self._mark_all_dirty()
        if self._subscription is None:
            self._subscription = self.bus.subscribe("mqtt", max(1000, settings.buffer))
            self._pump = asyncio.get_running_loop().create_task(self._drain_bus(), name="mqtt-bus")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt")

    async def run(self, ready: asyncio.Event) -> None:
        """Its lifetime (bcd.lifetime): connected as `apply()` says until cancelled; then `stop()`."""
        await hold(ready, self.stop)

    async def stop(self) -> None:
        """Flush what is buffered (briefly), publish `offline`, disconnect cleanly; cancel if that hangs."""
        self._stopping = True
        self._take_from_bus()
        self._request_leave()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning("mqtt_stop_timeout", seconds=STOP_TIMEOUT)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        pump = self._pump
        self._detach()
        if pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    def _request_leave(self) -> None:
        self._leave.set()
        self._wake.set()

    def _mark_all_dirty(self) -> None:
        self._dirty.update(self.estate.services)
        self._dirty.update(self._published_services)  # removed services get their retained state cleared
        self._wake.set()

    # -- bus -------------------------------------------------------------------------------------------
    async def _drain_bus(self) -> None:
        assert self._subscription is not None
        while True:
            self._keep(await self._subscription.get())
            self._take_from_bus()

    def _take_from_bus(self) -> None:
        if self._subscription is None:
            return
        self._count_bus_drops()
        queue = self._subscription.queue
        while not queue.empty():
            self._keep(queue.get_nowait())

    def _count_bus_drops(self) -> None:
        if self._subscription is not None and self._subscription.dropped != self._bus_drops:
            self.stats.dropped += self._subscription.dropped - self._bus_drops
            self._bus_drops = self._subscription.dropped

    def _keep(self, event: Event) -> None:
        if len(self._events) == self._events.maxlen:
            self.stats.dropped += 1
        self._events.append(event)
        if event.service is not None and (event.kind in STATE_KINDS or event.kind.startswith("maintenance_")):
            self._dirty.add(event.service)
        self._wake.set()

    # -- connecting --------------------------------------------------------------------------------------
    async def _run(self) -> None:
        """Connect, serve, reconnect: until stopped or `mqtt:` is removed. One catch-all keeps it alive."""
        while not self._stopping and self.settings is not None:
            retrying = AsyncRetrying(
                wait=wait_random_exponential(multiplier=self.backoff.initial, max=self.backoff.maximum),
                stop=stop_never,
                retry=retry_if_exception_type((aiomqtt.MqttError, OSError, SessionBroken)),
                reraise=True,
                sleep=self._backoff_sleep,
                before_sleep=self._log_retry,
            )
            try:
                await retrying(self._session)
            except Exception:
                log.exception("mqtt_failed", hint="retrying")
                await self._backoff_sleep(self.backoff.maximum)
        if self.settings is None and not self._stopping:  # `mqtt:` was removed by a reload
            self._detach()

    def _detach(self) -> None:
        """Stop listening to the bus; forget what was buffered for a broker we no longer talk to."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        if self._subscription is not None:
            self._count_bus_drops()
            self.bus.unsubscribe(self._subscription)
            self._subscription, self._bus_drops = None, 0
        self._events.clear()
        self._dirty.clear()
        self.reader.close()

    async def _backoff_sleep(self, seconds: float) -> None:
        """Sleep between attempts; cut short by new settings or a stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._leave.wait()

    def _log_retry(self, state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        settings = self.settings
        log.warning("mqtt_connect_failed", url=settings.url if settings else None, error=_describe(error),
                    attempt=state.attempt_number, retry_in=round(wait, 2))

    def _target(self, settings: MqttSettings) -> _Target:
        key = signing_keys(settings.commands) if settings.commands.enabled else None
        return _Target(
            link=broker_link(settings), prefix=topic_prefix(settings, self.instance),
            commands=settings.commands.enabled, key=key, max_age=settings.commands.max_age,
        )

    async def _session(self) -> None:
        """One connection, from CONNECT to a clean leave or a lost link.

        Raises MqttError/OSError when the attempt fails or the link is lost soon after connecting (tenacity
        backs off); returns when asked to leave, or when a long-lived link is lost (a fresh backoff starts)."""
        settings = self.settings
        if self._stopping or settings is None:
            return
        self._leave.clear()
        target = self._target(settings)
        status = f"{target.prefix}/status"
        on_message = partial(self.reader.arrive, topic=f"{target.prefix}/commands", key=target.key,
                             max_age=target.max_age)
        connected_at: float | None = None
        try:
            async with connected(target.link, identifier=self._client_id, call_timeout=CALL_TIMEOUT, keepalive=30,
                                 will=(status, b"offline"), on_message=on_message) as client:
                connected_at = time.monotonic()
                log.info("mqtt_connected", url=settings.url, prefix=target.prefix, commands=target.commands)
                await self._serve(client, target)
                await self._say_goodbye(client, status)
        except (aiomqtt.MqttError, OSError, SessionBroken, BaseExceptionGroup) as exc:
            lost = _unwrap(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if connected_at is None:
                raise lost from None
        else:
            log.info("mqtt_disconnected", url=settings.url, reason="clean stop or new settings")
            return
        finally:
            self.stats.connected = False
        lived = time.monotonic() - connected_at
        log.warning("mqtt_connection_lost", url=settings.url, error=_describe(lost), connected_for=round(lived, 1))
        if lived < STABLE_AFTER:
            raise lost

    async def _serve(self, client: aiomqtt.Client, target: _Target) -> None:
        """Run the session's parts until asked to leave; raise SessionBroken if a part ended on its own."""
        await client.publish(f"{target.prefix}/status", b"online", qos=1, retain=True)
        self._mark_all_dirty()
        if target.commands:
            granted = await client.subscribe(f"{target.prefix}/commands", qos=1)
            if refused(granted):
                log.error("mqtt_commands_not_subscribed", topic=f"{target.prefix}/commands",
                          hint="the broker refused the subscription (ACL?): no command will be read")
        broken: list[str] = []
        async with asyncio.TaskGroup() as tasks:
            # a lost link shows up as MqttError in the link watcher (even with no subscription) or in a publish
            parts = {tasks.create_task(self.reader.watch_link(client), name="mqtt-link"),
                     tasks.create_task(self.reader.work(), name="mqtt-commands"),
                     tasks.create_task(self.reader.send_replies(client, target.prefix), name="mqtt-replies")}

            def ended(part: asyncio.Task[None]) -> None:
                if part in parts:  # not cancelled by this session's end: restart the session
                    self.stats.connected = False
                    broken.append(part.get_name())
                    self._request_leave()

            for part in parts:
                part.add_done_callback(ended)
            self.stats.connected = True
            try:
                await self._publish_loop(client, target)
            finally:
                self.stats.connected = False
                ending, parts = parts, set()
                for part in ending:
                    part.cancel()
        if broken:
            raise SessionBroken(f"{', '.join(broken)} ended")

    async def _say_goodbye(self, client: aiomqtt.Client, status: str) -> None:
        """Clean leave: send what is buffered (briefly), then `offline` (a clean DISCONNECT voids the Will)."""
        prefix = status.removesuffix("/status")
        self._take_from_bus()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_ON_STOP):
                while self._dirty or self._events:
                    await self._publish_next(client, prefix)
        await client.publish(status, b"offline", qos=1, retain=True, timeout=FLUSH_ON_STOP)

    # -- publishing --------------------------------------------------------------------------------------
    async def _publish_loop(self, client: aiomqtt.Client, target: _Target) -> None:
        while not self._leave.is_set():
            if self._dirty or self._events:
                await self._publish_next(client, target.prefix)
            else:
                self._wake.clear()
                await self._wake.wait()

    async def _publish_next(self, client: aiomqtt.Client, prefix: str) -> None:
        """Publish one dirty service state (first) or one buffered event; on failure it stays queued."""
        if self._dirty:
            name = self._dirty.pop()
            view = self.estate.services.get(name)
            payload = b"" if view is None else _json(service_json(self.estate, view))  # empty clears it
            try:
                await client.publish(f"{prefix}/services/{name}", payload, qos=1, retain=True)
            except BaseException:
                self._dirty.add(name)
                raise
            if view is None:
                self._published_services.discard(name)
            else:
                self._published_services.add(name)
        else:
            event = self._events.popleft()
            try:
                await client.publish(f"{prefix}/events", _json(event.to_json()), qos=1)
            except BaseException:
                if len(self._events) == self._events.maxlen:
                    self.stats.dropped += 1
                self._events.appendleft(event)
                raise
        self.stats.published += 1

def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=str, separators=(",", ":")).encode("utf-8")


class SessionBroken(Exception):
    """A part of the session ended on its own (a bug): the session is restarted, never left half-alive."""


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A TaskGroup's failure as one exception: its first connection error if that is all it holds, else a
    SessionBroken (logged with the traceback of what broke it)."""
    leaves = list(_leaves(group))
    if leaves and all(isinstance(leaf, aiomqtt.MqttError | OSError | SessionBroken) for leaf in leaves):
        return leaves[0]
    log.error("mqtt_session_failed", exc_info=group, hint="restarting the session")
    return SessionBroken(_describe(next((leaf for leaf in leaves if not isinstance(leaf, aiomqtt.MqttError)),
                                        group)))


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return f"{text}: {cause}" if cause is not None and str(cause) not in text else text
