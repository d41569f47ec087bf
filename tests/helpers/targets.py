"""Real HTTP targets on loopback whose answers a test can change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
