"""The HTTP session of runbook steps, made on first use: aiohttp wants the running loop for it, and the runner
that uses it is built before the loop runs (with the engine, by the composition root's constructor)."""

from __future__ import annotations

import aiohttp


class StepSession:
    """Call it for the session (made on the first call); `close()` at its place in the daemon's order."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def __call__(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the runbook steps' HTTP session is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
