"""Bounds on the HTTP server's connections, so that clients cannot take the file descriptors probes need.

At most `server.max_connections` connections are open at once (fewer when the open-files limit is low: half
of what is left after a reserve, the other half being the probes'); a connection over the cap is answered 503
problem+json and closed at once, and counted. A connection that has not sent a whole request head within
`server.idle_timeout` (idle keep-alive, or a slow sender) is closed by aiohttp's keepalive timer; a body must
arrive within `server.request_timeout` (bcd.web.inputs).
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
from dataclasses import dataclass
from typing import cast

import structlog
from aiohttp import web

from bcd.config import Server

log = structlog.get_logger("bcd.web")

RESERVE_FILES = 64  # the daemon's own files: journal, logs, broker, etcd, listening socket
MIN_CONNECTIONS = 8
LINGER = 0.5
LINGERING = 16


def _refusal() -> bytes:
    body = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                       "detail": "too many open connections (server.max_connections); try again"}).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n")
    return head.encode() + body


REFUSAL = _refusal()


def connection_cap(configured: int, open_files: int) -> int:
    """`configured`, or fewer if the open-files limit could not hold that many (and the refusals lingering)
    beside the probes."""
    return max(MIN_CONNECTIONS, min(configured, (open_files - RESERVE_FILES) // 2 - LINGERING))


@dataclass
class ConnectionStats:
    """The HTTP server's figures for /metrics (and its cap)."""

    cap: int = 0
    refused: int = 0
    lingering: int = 0
    server: web.Server | None = None  # the server it caps, once it serves

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self.server.connections) if self.server is not None else 0


class _Refuse(asyncio.Protocol):
    """Answers 503 without reading the request and half-closes; closes for good LINGER seconds later (closing at
    once, with the client's request unread, would reset the connection and lose the answer). At most LINGERING
    refused connections wait so: past that, a flood's file descriptors are given back at once."""

    def __init__(self, stats: ConnectionStats) -> None:
        self._stats = stats

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        transport.write(REFUSAL)
        transport.write_eof()
        if self._stats.lingering >= LINGERING:
            transport.close()
            return
        self._stats.lingering += 1
        asyncio.get_running_loop().call_later(LINGER, self._close, transport)

    def _close(self, transport: asyncio.Transport) -> None:
        self._stats.lingering -= 1
        transport.close()


class _Capped:
    """A protocol factory in front of aiohttp's server: its handler while under the cap, else a refusal."""

    def __init__(self, server: web.Server, stats: ConnectionStats) -> None:
        self._server = server
        self._stats = stats

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self._server.connections) >= self._stats.cap:
            self._stats.refused += 1
            return _Refuse(self._stats)
        return self._server()


def connection_stats(settings: Server) -> ConnectionStats:
    """The cap for this server's connections, all its listening sockets together (logged if lowered)."""
    open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    stats = ConnectionStats(cap=connection_cap(settings.max_connections, open_files))
    if stats.cap < settings.max_connections:
        log.warning("http_connections_capped", cap=stats.cap, max_connections=settings.max_connections,
                    open_files_limit=open_files, hint="raise LimitNOFILE to allow server.max_connections")
    return stats


class LimitedSite(web.BaseSite):
    """Serves a bound, listening socket like aiohttp's SockSite, with the connection cap of `stats`."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, stats: ConnectionStats) -> None:
        super().__init__(runner)
        self._sock = sock
        self._stats = stats

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._stats.server = server
        self._server = await asyncio.get_running_loop().create_server(_Capped(server, self._stats), sock=self._sock)
