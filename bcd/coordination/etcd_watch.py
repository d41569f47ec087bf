"""Watch streams over etcd's JSON gateway: one `POST /v3/watch` answers with newline-delimited JSON messages for
as long as it stays open. `follow` turns a stream into watch events, reopening a broken one (member killed,
member lost its leader, idle past the client's `watch_idle_timeout`) from the revision after the last event
seen, so no event is lost or repeated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp
import structlog

from bcd.coordination.etcd_wire import (
    RETRY_ELSEWHERE,
    EtcdCompacted,
    EtcdRequestError,
    EventType,
    KeyValue,
    TryElsewhere,
    WatchEvent,
    describe,
    error_of,
    int64,
    range_fields,
)

log = structlog.get_logger("bcd.coordination.etcd")

MAX_MESSAGE = 64 * 1024 * 1024  # a watch message larger than this is a broken stream, not a message


class StreamBroken(Exception):
    """The watch stream ended, stalled past the idle timeout, or reported an error worth a reconnect."""

    def __init__(self, reason: str, *, idle: bool = False) -> None:
        super().__init__(reason)
        self.idle = idle


class Messages:
    """Newline-delimited JSON messages from a streaming gateway response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._buffer = bytearray()

    async def next(self, idle: float | None) -> dict[str, Any]:
        """The next message; raises StreamBroken at the end of the stream or after `idle` seconds of silence."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.strip():
                    return self._decode(line)
                continue
            if len(self._buffer) > MAX_MESSAGE:
                raise StreamBroken("a watch message exceeded 64 MiB")
            try:
                async with asyncio.timeout(idle):
                    chunk = await self.response.content.readany()
            except TimeoutError:
                raise StreamBroken(f"no message for {idle}s", idle=True) from None
            if not chunk:
                if self._buffer.strip():
                    line = bytes(self._buffer)
                    self._buffer.clear()
                    return self._decode(line)
                raise StreamBroken("the stream ended")
            self._buffer += chunk

    @staticmethod
    def _decode(line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
        except ValueError:
            raise StreamBroken("a watch message is not JSON") from None
        if not isinstance(message, dict):
            raise StreamBroken("a watch message is not a JSON object")
        return message


def watch_request(key: str, prefix: bool, start_revision: int | None) -> str:
    """The body of a `POST /v3/watch` that opens a stream (with progress notifications)."""
    request: dict[str, Any] = {**range_fields(key, prefix), "progress_notify": True}
    if start_revision is not None:
        request["start_revision"] = str(start_revision)
    return json.dumps({"create_request": request}, separators=(",", ":"))


async def confirmed(response: aiohttp.ClientResponse) -> tuple[Messages, int]:
    """The stream's messages once etcd confirmed its creation, and the revision at creation. TryElsewhere when
    this member cannot serve it; EtcdRequestError when etcd refused it. The response is closed on failure."""
    try:
        messages = Messages(response)
        try:
            first = await messages.next(None)
        except StreamBroken as exc:
            raise TryElsewhere(describe(exc)) from None
        error = error_of(first)
        result = first.get("result")
        if response.status >= 500 or (error is not None and error[0] in RETRY_ELSEWHERE):
            raise TryElsewhere(f"HTTP {response.status} {error[1] if error else ''}".rstrip())
        if error is not None or response.status >= 400 or not isinstance(result, dict) or not result.get("created"):
            code, text = error if error is not None else (None, f"unexpected first message {first}")
            raise EtcdRequestError(f"/v3/watch: {text}", status=response.status, code=code)
    except BaseException:
        response.close()
        raise
    return messages, int64(result.get("header", {}).get("revision"))


def _unheard(_revision: int) -> None:
    """What an unused `opened` hears."""


async def follow(
    open_stream: Callable[[int | None], Awaitable[tuple[Messages, int]]],
    *,
    key: str,
    idle: float,
    start_revision: int | None,
    endpoint: Callable[[], str],
    opened: Callable[[int], None] | None = None,
) -> AsyncGenerator[WatchEvent, None]:
    """The events of the streams `open_stream(from_revision)` opens, from `start_revision` on (from the
    first stream's creation when None), reopening a broken stream where it broke. Raises what `open_stream`
    raises, EtcdCompacted when the revisions to resume from were compacted, EtcdRequestError when etcd
    cancels the watch. `endpoint()` names the member, for the log; `opened(revision)` is called each time
    etcd confirms a stream (with the store's revision then)."""
    next_revision = start_revision
    while True:
        messages, created_revision = await open_stream(next_revision)
        (opened or _unheard)(created_revision)
        if next_revision is None:
            next_revision = created_revision + 1
        try:
            while True:
                message = await messages.next(idle)
                error = error_of(message)
                if error is not None:
                    if error[0] in RETRY_ELSEWHERE:
                        raise StreamBroken(error[1])
                    raise EtcdRequestError(f"/v3/watch: {error[1]}", status=200, code=error[0])
                result = message.get("result", {})
                if not isinstance(result, dict):
                    raise StreamBroken("a watch message without a result")
                if int64(result.get("compact_revision")):
                    raise EtcdCompacted(int64(result["compact_revision"]))
                if result.get("canceled"):  # e.g. permission denied: reopening would not help
                    reason = result.get("cancel_reason", "no reason given")
                    raise EtcdRequestError(f"/v3/watch: canceled: {reason}", status=200, code=None)
                events = result.get("events", [])
                if not events:
                    # a progress notification: every event up to this revision was delivered
                    revision = int64(result.get("header", {}).get("revision"))
                    next_revision = max(next_revision, revision + 1)
                    continue
                for raw in events:
                    kind = EventType.DELETE if raw.get("type") == "DELETE" else EventType.PUT
                    event = WatchEvent(kind, KeyValue.from_json(raw.get("kv", {})))
                    next_revision = max(next_revision, event.revision + 1)
                    yield event
        except (StreamBroken, aiohttp.ClientError, OSError) as exc:
            report = log.debug if isinstance(exc, StreamBroken) and exc.idle else log.info
            report("etcd watch stream reopened", key=key, revision=next_revision, endpoint=endpoint(),
                   reason=describe(exc))
            await asyncio.sleep(0.05)  # a member that drops every new stream must not cost a busy loop
        finally:
            messages.response.close()
