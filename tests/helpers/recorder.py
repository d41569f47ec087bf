"""A real HTTP server on loopback that records every request and answers from a status sequence.

Runbook `http` steps (and probes) talk to it like to any server; the test then asserts on exactly what was
sent. Answers follow `statuses`: the n-th request gets `statuses[n]`, and once the sequence is used up the
last status repeats (or, with `cycle=True`, the sequence starts over — a flapping target).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder:
    """Records requests to any path; answers with the next status of `statuses` and `body`."""

    def __init__(self, statuses: Sequence[int] = (200,), *, body: str = "ok", cycle: bool = False) -> None:
        if not statuses:
            raise ValueError("statuses must not be empty")
        self.statuses = list(statuses)
        self.body = body
        self.cycle = cycle
        self.requests: list[Recorded] = []
        self.port = 0
        self._offset = 0  # index of the request that gets statuses[0]
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set_statuses(self, statuses: Sequence[int], *, cycle: bool = False) -> None:
        """Answer from a new sequence, starting with the next request."""
        self.statuses = list(statuses)
        self.cycle = cycle
        self._offset = len(self.requests)

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]

    def to(self, path: str) -> list[Recorded]:
        """The requests sent to `path`."""
        return [request for request in self.requests if request.path == path]

    async def wait_for(self, count: int, path: str | None = None, timeout: float = 10.0) -> list[Recorded]:
        """Return once at least `count` requests (to `path`, if given) have arrived."""
        async with asyncio.timeout(timeout):
            while True:
                seen = self.requests if path is None else self.to(path)
                if len(seen) >= count:
                    return seen
                self._changed.clear()
                await self._changed.wait()

    def _status(self, index: int) -> int:
        index -= self._offset
        if self.cycle:
            return self.statuses[index % len(self.statuses)]
        return self.statuses[min(index, len(self.statuses) - 1)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self._status(len(self.requests))
        self.requests.append(
            Recorded(request.method, request.path, request.query_string, dict(request.headers), body)
        )
        self._changed.set()
        return web.Response(status=status, text=self.body)

    async def start(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Recorder:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
