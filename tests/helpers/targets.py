"""Real HTTP targets on loopback whose answers a test can change, and one that never answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


class HttpTarget:
    """Serves GET /health with `status` and `body`; counts requests."""

    def __init__(self) -> None:
        self.status = 200
        self.body = "UP"
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    async def start(self) -> HttpTarget:
        app = web.Application()
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def _health(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=self.status, text=self.body)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@asynccontextmanager
async def two_sites() -> AsyncIterator[tuple[HttpTarget, HttpTarget]]:
    """dorset's and hampshire's targets, answering 200 until told otherwise; stopped when the block ends."""
    dorset, hampshire = HttpTarget(), HttpTarget()
    try:
        await dorset.start()
        await hampshire.start()
        yield dorset, hampshire
    finally:
        await dorset.stop()
        await hampshire.stop()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on loopback that accepts connections and never says a byte (a hung server; a TLS handshake
    with it never ends); yields its port. Connections still open when the block ends are closed."""
    held: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        held[task] = writer
        await reader.read()  # until the client gives up and closes, or the server ends

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for writer in held.values():  # a TLS connect given up on may still be open on the client's side
            writer.close()
        await asyncio.gather(*held, return_exceptions=True)
        await server.wait_closed()
