"""MQTT output: live state and events for other systems, and signed operator commands.

Under `<prefix>` (default `bcd/<instance>`):
- `status`: retained `online` while connected; the Will (and a clean stop) leaves a retained `offline`;
- `services/<name>`: retained JSON state of each service, re-published whenever it changes and after
  every (re)connect;
- `events`: every bus event as JSON (QoS 1, not retained), kept in a bounded buffer while the broker is away;
- `commands` (only when enabled): HMAC-signed JSON commands, each answered on `replies/<id>`.

The broker being away never stops the daemon: connection attempts back off with full jitter (tenacity),
events wait in a bounded deque (what falls out is counted), and the state is re-sent after each connect.
`verify()` is the pure half of the command path; `execute()` acts on a verified command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never, wait_random_exponential

from bcd.broker import BrokerLink, broker_link
from bcd.bus import Bus, Subscription
from bcd.config import Config, MqttSettings, read_credential
from bcd.durations import parse_duration
from bcd.engine import Engine, RequestRefused
from bcd.lazy import lazy_import
from bcd.model import Event, RunKind
from bcd.policy import Request
from bcd.web.server import service_json

if TYPE_CHECKING:
    import aiomqtt
else:  # loaded on first use: only configs with an mqtt section need it
    aiomqtt = lazy_import("aiomqtt")

log = structlog.get_logger("bcd.mqtt")

MAX_COMMAND_BYTES = 8 * 1024
MAX_REASON = 500
MAX_BY = 64
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
STATE_KINDS = frozenset({"site_transition", "service_status", "active_changed", "acknowledged"})
CONNECT_TIMEOUT = 5.0
CALL_TIMEOUT = 10.0  # publish / subscribe / disconnect acknowledgements
STOP_TIMEOUT = 2.0
FLUSH_ON_STOP = 1.0
STABLE_AFTER = 2.0  # a connection that lived this long resets the backoff when it is lost
MAX_SEEN_IDS = 10_000


# ---------------------------------------------------------------------------------------------------------
# Commands: the pure part


class Action(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    ACK = "ack"
    MAINTENANCE = "maintenance"
    APPROVE = "approve"
    ABORT = "abort"


COMMON_FIELDS = frozenset({"id", "action", "reason", "by", "ts", "sig"})
ACTION_FIELDS: dict[Action, frozenset[str]] = {
    Action.FAILOVER: frozenset({"service", "to"}),
    Action.FAILBACK: frozenset({"service", "to"}),
    Action.ACK: frozenset({"service"}),
    Action.MAINTENANCE: frozenset({"service", "site", "duration", "end"}),
    Action.APPROVE: frozenset({"run", "service"}),
    Action.ABORT: frozenset({"run", "service"}),
}


@dataclass(frozen=True, slots=True)
class Command:
    """A command whose signature, freshness and shape were verified."""

    id: str
    action: Action
    reason: str
    by: str
    ts: float
    service: str | None = None
    to: str | None = None
    site: str | None = None
    duration: float | None = None
    end: bool = False
    run: int | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command was refused; `id` is None when the payload had no usable id (reply on `replies/invalid`)."""

    id: str | None
    reason: str


class _Malformed(Exception):
    pass


def canonical(obj: dict[str, Any]) -> bytes:
    """The bytes a command's `sig` is computed over: the object without `sig`, keys sorted, no spaces."""
    unsigned = {key: value for key, value in obj.items() if key != "sig"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(obj: dict[str, Any], key: bytes) -> str:
    """Hex HMAC-SHA256 of `canonical(obj)`: what a sender puts in `sig`."""
    return hmac.new(key, canonical(obj), hashlib.sha256).hexdigest()


def verify(
    raw: bytes, key: bytes, now: float, seen: Container[str], *, max_age: float = 60.0, retained: bool = False
) -> Command | Refusal:
    """Check one command payload; pure: no clock, no I/O, `seen` is only read.

    Refused: larger than 8 KiB, not a JSON object (or duplicate keys), a retained message, unsigned or with
    a bad signature (constant-time compare), wrong field types or fields the action does not take, an
    unknown action, `ts` more than `max_age` seconds from `now` either way, or an `id` in `seen`.
    The caller records the id of every Command it gets back.
    """
    if len(raw) > MAX_COMMAND_BYTES:
        return Refusal(None, f"payload too large: {len(raw)} bytes (limit {MAX_COMMAND_BYTES})")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError, _Malformed) as exc:
        return Refusal(None, f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Refusal(None, "not a JSON object")
    raw_id = obj.get("id")
    command_id = raw_id if isinstance(raw_id, str) and ID_PATTERN.match(raw_id) else None
    if command_id is None:
        return Refusal(None, "id must be a string of 1-64 letters, digits, '_', '.', ':' or '-'")
    if retained:
        return Refusal(command_id, "retained message: commands are never taken from retained messages")
    sig = obj.get("sig")
    if sig is None:
        return Refusal(command_id, "unsigned: no sig")
    if not isinstance(sig, str) or not hmac.compare_digest(sig.lower().encode(), sign(obj, key).encode()):
        return Refusal(command_id, "bad signature")
    try:
        command = _parse(obj, command_id)
    except _Malformed as exc:
        return Refusal(command_id, str(exc))
    age = now - command.ts
    if age > max_age:
        return Refusal(command_id, f"stale: ts is {age:.0f}s old (max_age {max_age:g}s)")
    if -age > max_age:
        return Refusal(command_id, f"ts is {-age:.0f}s in the future (max_age {max_age:g}s)")
    if command_id in seen:
        return Refusal(command_id, "replayed: this id was seen before")
    return command


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Malformed(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise _Malformed(f"{name} is not a number")


def _parse(obj: dict[str, Any], command_id: str) -> Command:
    action_name = obj.get("action")
    if not isinstance(action_name, str):
        raise _Malformed("action must be a string")
    try:
        action = Action(action_name)
    except ValueError:
        raise _Malformed(f"unknown action {action_name!r}; one of {', '.join(Action)}") from None
    extra = sorted(set(obj) - COMMON_FIELDS - ACTION_FIELDS[action])
    if extra:
        raise _Malformed(f"{action} does not take {', '.join(extra)}")
    ts = obj.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise _Malformed("ts must be a number (Unix seconds)")
    reason = _text(obj, "reason", MAX_REASON, required=True, empty=True)
    by = _text(obj, "by", MAX_BY, required=True)
    needs_service = action not in (Action.APPROVE, Action.ABORT)
    service = _text(obj, "service", 64, required=needs_service)
    run = obj.get("run")
    if action in (Action.APPROVE, Action.ABORT) and (isinstance(run, bool) or not isinstance(run, int) or run < 1):
        raise _Malformed("run must be a positive integer (a run id)")
    end = obj.get("end", False)
    if not isinstance(end, bool):
        raise _Malformed("end must be true or false")
    duration: float | None = None
    if action is Action.MAINTENANCE and not end:
        if "duration" not in obj:
            raise _Malformed("maintenance needs a duration (e.g. 2h), or end: true")
        value = obj["duration"]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Malformed("duration must be a string such as 2h, or seconds")
        try:
            duration = parse_duration(value)
        except ValueError as exc:
            raise _Malformed(f"duration: {exc}") from None
        if duration <= 0:
            raise _Malformed("duration must be positive")
    return Command(
        id=command_id, action=action, reason=reason or "", by=by or "", ts=float(ts), service=service,
        to=_text(obj, "to", 64), site=_text(obj, "site", 64), duration=duration, end=end,
        run=run if isinstance(run, int) else None,
    )


def _text(obj: dict[str, Any], name: str, limit: int, *, required: bool = False, empty: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Malformed(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{name} must be a string")
    if len(value) > limit:
        raise _Malformed(f"{name} is longer than {limit} characters")
    if not value and not empty:
        raise _Malformed(f"{name} must not be empty")
    return value


class RecentIds:
    """Ids of accepted commands, kept long enough that a replay is always caught: a command is valid for
    `max_age` either side of its `ts`, so an id is kept for twice that after it was seen. Bounded: when full
    of ids still in their window, `add` refuses (the command is refused) rather than forget one early."""

    def __init__(self, max_age: float, limit: int = MAX_SEEN_IDS) -> None:
        self.keep = 2 * max_age + 1
        self.limit = limit
        self._ids: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, command_id: str, now: float) -> bool:
        while self._ids:
            oldest, at = next(iter(self._ids.items()))
            if now - at <= self.keep:
                break
            del self._ids[oldest]
        if len(self._ids) >= self.limit:
            return False
        self._ids[command_id] = now
        return True


# ---------------------------------------------------------------------------------------------------------
# Commands: acting on the engine


async def execute(engine: Engine, command: Command) -> tuple[bool, str]:
    """Carry out a verified command: (accepted, what happened or why not). Never raises for a refusal.
    A failover/failback goes through `engine.submit()`, so on a cluster member it first takes the service's
    lock in etcd (refused when another instance holds it or coordination is unavailable)."""
    by = f"mqtt:{command.by}"
    if command.service is not None and command.service not in engine.services:
        return False, f"no service named {command.service!r}"
    if command.action in (Action.FAILOVER, Action.FAILBACK):
        assert command.service is not None
        kind = RunKind.FAILOVER if command.action is Action.FAILOVER else RunKind.FAILBACK
        try:
            run = await engine.submit(command.service, Request(kind, command.to), by, command.reason or str(kind))
        except RequestRefused as exc:
            return False, exc.verdict.reason
        return True, f"run {run.id}: {kind} of {command.service} to {run.request.to_site}"
    if command.action is Action.ACK:
        assert command.service is not None
        ids = engine.acknowledge(command.service, by, command.reason or "acknowledged")
        return True, f"acknowledged runs {ids}" if ids else "nothing to acknowledge"
    if command.action is Action.MAINTENANCE:
        assert command.service is not None
        try:
            if command.end:
                sites = engine.end_maintenance(command.service, command.site, by)
                return True, f"maintenance ended for {', '.join(sites) or 'no site'}"
            assert command.duration is not None
            sites = engine.start_maintenance(command.service, command.site, command.duration,
                                             command.reason or "maintenance", by)
        except KeyError as exc:
            return False, str(exc.args[0]) if exc.args else "unknown site"
        return True, f"maintenance of {', '.join(sites)} for {command.duration:g}s"
    return _control(engine, command, by)


def _control(engine: Engine, command: Command, by: str) -> tuple[bool, str]:
    assert command.run is not None
    record = engine.runs.get(command.run)
    if record is None:
        return False, f"no run {command.run}"
    if command.service is not None and record.service != command.service:
        return False, f"run {command.run} belongs to {record.service}, not {command.service}"
    runner = engine.runner
    if runner is None:
        return False, "the runner is not started"
    if command.action is Action.APPROVE:
        if runner.approve(command.run, by):
            return True, f"run {command.run} approved"
        return False, f"run {command.run} is not waiting for approval"
    if runner.abort(command.run, by):
        return True, f"run {command.run} aborted"
    return False, f"run {command.run} is not in progress"


# ---------------------------------------------------------------------------------------------------------
# The connection


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect waits: random in [0, min(maximum, initial * 2**n)] after the n-th failure in a row."""

    initial: float = 0.5
    maximum: float = 30.0


@dataclass(slots=True)
class MqttStats:
    connected: bool = False
    published: int = 0
    dropped: int = 0
    commands: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class _Target:
    """One connection attempt's settings, with credentials read from their files."""

    link: BrokerLink
    prefix: str
    commands: bool
    key: bytes | None
    max_age: float


def topic_prefix(settings: MqttSettings, instance: str) -> str:
    return settings.topic_prefix or f"bcd/{instance}"


class MqttOutput:
    """Keeps one connection to the broker of `config.mqtt` (see the module docstring).

    `apply(config)` starts it, changes its settings (reconnecting when they differ) or stops it when
    `mqtt:` is gone; `stop()` publishes `offline` and disconnects cleanly.
    """

    def __init__(self, engine: Engine, bus: Bus, *, clock: Callable[[], float] = time.time,
                 backoff: Backoff = Backoff()) -> None:
        self.engine = engine
        self.bus = bus
        self.clock = clock
        self.backoff = backoff
        self.stats = MqttStats()
        self.settings: MqttSettings | None = None
        self.instance = ""
        self._events: deque[Event] = deque(maxlen=1000)
        self._dirty: set[str] = set()
        self._published_services: set[str] = set()
        self._seen: RecentIds | None = None
        self._wake = asyncio.Event()
        self._leave = asyncio.Event()
        self._stopping = False
        self._subscription: Subscription | None = None
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
        if self._seen is None:
            self._seen = RecentIds(settings.commands.max_age)
        self._seen.keep = max(self._seen.keep, 2 * settings.commands.max_age + 1)  # never forget ids early
        self.settings, self.instance = settings, instance
        self._stopping = False
        self._mark_all_dirty()
        if self._subscription is None:
            self._subscription = self.bus.subscribe("mqtt", max(1000, settings.buffer))
            self._pump = asyncio.get_running_loop().create_task(self._drain_bus(), name="mqtt-bus")
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt")

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

    @property
    def dropped(self) -> int:
        """Events lost: pushed out of the full buffer, or dropped by the bus before they reached it."""
        bus_drops = self._subscription.dropped if self._subscription is not None else 0
        return self.stats.dropped + bus_drops

    def _request_leave(self) -> None:
        self._leave.set()
        self._wake.set()

    def _mark_all_dirty(self) -> None:
        self._dirty.update(self.engine.services)
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
        queue = self._subscription.queue
        while not queue.empty():
            self._keep(queue.get_nowait())

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
                retry=retry_if_exception_type((aiomqtt.MqttError, OSError)),
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
            self.bus.unsubscribe(self._subscription)
            self._subscription = None
        self._events.clear()
        self._dirty.clear()

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
        key: bytes | None = None
        if settings.commands.enabled and settings.commands.hmac_key_file:
            try:
                key = read_credential(settings.commands.hmac_key_file).encode("utf-8") or None
            except OSError as exc:
                log.error("mqtt_command_key_unreadable", file=settings.commands.hmac_key_file, error=str(exc),
                          hint="every command is refused until the key can be read (reload or reconnect)")
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
        client = aiomqtt.Client(
            target.link.host, target.link.port, username=target.link.username, password=target.link.password,
            identifier=self._client_id, clean_session=True, timeout=CALL_TIMEOUT, keepalive=30,
            will=aiomqtt.Will(status, b"offline", qos=1, retain=True),
            tls_context=target.link.tls, tls_insecure=target.link.tls_insecure,
            max_queued_incoming_messages=100,
        )
        client._client.connect_timeout = CONNECT_TIMEOUT  # paho's own connect deadline (aiomqtt hides it)
        connected_at: float | None = None
        try:
            async with client:
                connected_at = time.monotonic()
                self.stats.connected = True
                log.info("mqtt_connected", url=settings.url, prefix=target.prefix, commands=target.commands)
                await self._serve(client, target)
                await self._say_goodbye(client, status)
        except (aiomqtt.MqttError, OSError, BaseExceptionGroup) as exc:
            lost = _unwrap(exc) if isinstance(exc, BaseExceptionGroup) else exc
            if lost is exc and isinstance(exc, BaseExceptionGroup):
                raise  # not a connection problem: a bug, for the catch-all in _run
            if connected_at is None:
                _abandon(client)
                raise lost from None
        except asyncio.CancelledError:
            if connected_at is None:
                _abandon(client)
            raise
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
        await client.publish(f"{target.prefix}/status", b"online", qos=1, retain=True)
        self._mark_all_dirty()
        if target.commands:
            granted = await client.subscribe(f"{target.prefix}/commands", qos=1)
            if any(getattr(code, "value", code) >= 0x80 for code in granted):
                log.error("mqtt_commands_not_subscribed", topic=f"{target.prefix}/commands",
                          hint="the broker refused the subscription (ACL?): no command will be read")
        async with asyncio.TaskGroup() as tasks:
            # a lost link shows up as MqttError in the reader (even with no subscription) or in a publish
            reader = tasks.create_task(self._read(client, target), name="mqtt-reader")
            await self._publish_loop(client, target)
            reader.cancel()

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
            view = self.engine.services.get(name)
            payload = b"" if view is None else _json(service_json(self.engine, view))  # empty clears it
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
                await client.publish(f"{prefix}/events", _json(event_payload(event)), qos=1)
            except BaseException:
                if len(self._events) == self._events.maxlen:
                    self.stats.dropped += 1
                self._events.appendleft(event)
                raise
        self.stats.published += 1

    # -- commands ----------------------------------------------------------------------------------------
    async def _read(self, client: aiomqtt.Client, target: _Target) -> None:
        commands = f"{target.prefix}/commands"
        async for message in client.messages:
            if message.topic.value != commands:
                continue
            raw = message.payload if isinstance(message.payload, bytes | bytearray) else str(message.payload).encode()
            reply_to, text = await self.handle(bytes(raw), target.key, retained=bool(message.retain),
                                         max_age=target.max_age)
            await client.publish(f"{target.prefix}/replies/{reply_to}", text.encode(), qos=1)
            self.stats.published += 1

    async def handle(self, raw: bytes, key: bytes | None, *, retained: bool, max_age: float) -> tuple[str, str]:
        """Verify and carry out one command payload; (reply topic suffix, reply text). Logs one line."""
        now = self.clock()
        if self._seen is None:
            self._seen = RecentIds(max_age)
        seen = self._seen
        verdict = verify(raw, key or b"", now, seen, max_age=max_age, retained=retained)
        if key is None:  # still verified above, for the id to reply to
            verdict = Refusal(verdict.id, "commands unavailable: the hmac key cannot be read")
        if isinstance(verdict, Command) and not seen.add(verdict.id, now):
            verdict = Refusal(verdict.id, "too many recent commands: try again later")
        if isinstance(verdict, Refusal):
            self.stats.commands["refused"] += 1
            log.warning("mqtt_command_refused", id=verdict.id, why=verdict.reason, retained=retained,
                        size=len(raw))
            return verdict.id or "invalid", f"refused: {verdict.reason}"
        try:
            accepted, detail = await execute(self.engine, verdict)
        except Exception as exc:
            log.exception("mqtt_command_failed", id=verdict.id, action=str(verdict.action))
            accepted, detail = False, f"internal error: {type(exc).__name__}"
        self.stats.commands["accepted" if accepted else "refused"] += 1
        log_fields = {"id": verdict.id, "action": str(verdict.action), "service": verdict.service,
                      "by": f"mqtt:{verdict.by}", "run": verdict.run, "reason": verdict.reason}
        if accepted:
            log.info("mqtt_command_accepted", detail=detail, **log_fields)
            return verdict.id, f"accepted: {detail}"
        log.warning("mqtt_command_refused", why=detail, **log_fields)
        return verdict.id, f"refused: {detail}"


def event_payload(event: Event) -> dict[str, Any]:
    """`Event.to_dict()`, except that the event's own fields win over `data` keys of the same name: such a
    key (a run's or a step's `kind`) is renamed after the event's subject (`run_kind`, `step_kind`)."""
    payload = event.to_dict()
    own = {"id": event.id, "kind": event.kind, "at": event.at, "service": event.service, "site": event.site,
           "reason": event.reason}
    subject = event.kind.split("_")[0]
    for key in own.keys() & event.data.keys():
        payload[f"{subject}_{key}"] = event.data[key]
    payload.update(own)
    return payload


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=str, separators=(",", ":")).encode("utf-8")


def _abandon(client: aiomqtt.Client) -> None:
    """Close the socket of an attempt that failed before CONNACK (e.g. bad credentials): aiomqtt 2.5 leaves
    it open and registered with the loop. paho's disconnect() closes it unless aiomqtt's on_disconnect
    callback raises first (it does once its CONNACK future is settled): detach that callback."""
    inner = client._client
    inner.on_disconnect = None
    with contextlib.suppress(Exception):
        inner.disconnect()


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A TaskGroup's failure as one exception: its first connection error if that is all it holds."""
    leaves = list(_leaves(group))
    if leaves and all(isinstance(leaf, aiomqtt.MqttError | OSError) for leaf in leaves):
        return leaves[0]
    return group


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


# ---------------------------------------------------------------------------------------------------------
# Metrics


class MqttCollector(Collector):
    """`bcd_mqtt_*`: rendered only while MQTT is configured."""

    def __init__(self, output: Callable[[], MqttOutput | None]) -> None:
        self._output = output

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        output = self._output()
        if output is None or output.settings is None:
            return
        stats = output.stats
        yield GaugeMetricFamily("bcd_mqtt_connected", "Whether bcd is connected to its MQTT broker.",
                                value=int(stats.connected))
        yield CounterMetricFamily("bcd_mqtt_dropped_messages", "Events dropped before they could be published.",
                                  value=output.dropped)
        yield CounterMetricFamily("bcd_mqtt_published_messages", "Messages published to the broker.",
                                  value=stats.published)
        commands = CounterMetricFamily("bcd_mqtt_commands", "MQTT commands by result.", labels=["result"])
        for result in ("accepted", "refused"):
            commands.add_metric([result], stats.commands[result])
        yield commands
