"""The journal's events: paginated history and a live server-sent-events stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from bcd.events import Event
from bcd.view import EstateView
from bcd.web.auth import Role
from bcd.web.context import CONTEXT
from bcd.web.inputs import clamped, integer, query_int
from bcd.web.operations import caller, handler
from bcd.web.problems import problem

HEARTBEAT = 15.0
MAX_PAGE = 500


class Streams:
    """The tasks serving open event streams (ended at shutdown)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()


STREAMS = web.AppKey("streams", Streams)


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_get("/api/v1/events/stream", stream_events)
    app[STREAMS] = Streams()
    app.on_shutdown.append(_end_streams)


async def _end_streams(app: web.Application) -> None:
    """Open event streams never end by themselves: end them so shutdown does not wait for them."""
    for task in list(app[STREAMS].tasks):
        task.cancel()


@handler
async def list_events(request: web.Request) -> web.Response:
    """Events after the id `since` (exclusive), oldest first; `next` is the cursor for the next page.
    Without `since`, `tail=N` gives the newest N events."""
    caller(request, Role.VIEWER)
    estate = request.app[CONTEXT].view
    since = query_int(request, "since", 0)
    limit = clamped(request, "limit", 100, MAX_PAGE)
    service = request.query.get("service")
    if service is not None and service not in estate.services:
        return problem(404, "Not Found", f"no service named {service!r}")
    if "tail" in request.query and "since" not in request.query:
        events = estate.last_events(clamped(request, "tail", 50, MAX_PAGE), service)
    else:
        events = estate.events(after=since, service=service, limit=limit)
    return web.json_response({
        "events": [event.to_json() for event in events],
        "next": events[-1].id if events else since,
    })


def sse(event: Event) -> bytes:
    """One SSE message; an event not journaled yet (id null) has no `id:` line, so a client's Last-Event-ID
    stays at the last journaled event and a reconnect replays from there."""
    if event.id is None:
        return f"event: {event.kind}\ndata: {json.dumps(event.to_json())}\n\n".encode()
    return f"id: {event.id}\nevent: {event.kind}\ndata: {json.dumps(event.to_json())}\n\n".encode()


@handler
async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: what the journal holds after Last-Event-ID (if given), then live events."""
    caller(request, Role.VIEWER)
    estate = request.app[CONTEXT].view
    service = request.query.get("service")
    last = integer(request.headers.get("Last-Event-ID", "0") or "0", "Last-Event-ID")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    task = asyncio.current_task()
    streams = request.app[STREAMS].tasks
    if task is not None:
        streams.add(task)
    try:
        return await _follow(response, estate, service, last)
    except asyncio.CancelledError:
        return response
    finally:
        if task is not None:
            streams.discard(task)


async def _follow(response: web.StreamResponse, estate: EstateView, service: str | None,
                  last: int) -> web.StreamResponse:
    async with estate.subscription("sse", size=1000) as live:
        for event in estate.events(after=last, service=service, limit=MAX_PAGE) if last else []:
            await response.write(sse(event))
            last = event.id or last
        await response.write(b": connected\n\n")
        with contextlib.suppress(ConnectionResetError):
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT):
                        event = await live.get()
                except TimeoutError:
                    await response.write(b": heartbeat\n\n")
                    continue
                if (event.id is not None and event.id <= last) or (service is not None and event.service != service):
                    continue
                await response.write(sse(event))
    return response
