"""The HTTP server's lifetime: set up early in the daemon's order, answering only once the daemon opens it.

The daemon starts its parts in order and stops them in reverse (bcd.lifetime). The server is the exception
that proves the rule: it must answer last (every other part ready: an operator's request may start a run)
and stop last (SSE clients see the runner's last events as it stops). So it is set up right after
`server.listen` is bound, and `open(listeners)` starts serving them once everything else is ready; until then
connections wait in the listen backlog. It is made before anything runs (no listener, no loop needed).
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from bcd.config import Server
from bcd.lifetime import until_cancelled
from bcd.web.limits import ConnectionStats, LimitedSite, connection_stats


class WebServer:
    """Serves `app` on the listeners given to `open()` (which it owns from then on: closed when it stops)."""

    def __init__(self, app: web.Application, settings: Server) -> None:
        self.runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True,
            keepalive_timeout=settings.idle_timeout,  # also closes a connection whose request head lags
        )
        self.connections: ConnectionStats = connection_stats(settings)
        self._listeners: list[socket.socket] = []
        self._open = asyncio.Event()
        self._serving = asyncio.Event()

    async def run(self, ready: asyncio.Event) -> None:
        """Its lifetime (bcd.lifetime): ready once set up; serves from `open()` on; when cancelled, open
        connections are closed (aiohttp's shutdown) and so are the listeners it never served."""
        try:
            await self.runner.setup()
            ready.set()
            await self._open.wait()
            while self._listeners:
                await LimitedSite(self.runner, self._listeners[0], self.connections).start()
                self._listeners.pop(0)  # the site closes it now
            self._serving.set()
            await until_cancelled()
        finally:
            for sock in self._listeners:
                sock.close()
            await self.runner.cleanup()

    async def open(self, listeners: list[socket.socket]) -> None:
        """Start answering on the bound `listeners` (each taken off the list once served); returns once every
        listener is served."""
        self._listeners = listeners
        self._open.set()
        await self._serving.wait()
