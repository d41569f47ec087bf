"""Binding `server.listen` before anything else starts, so that an address in use stops a start at once,
with one line saying so, instead of after probes and runbooks have begun."""

from __future__ import annotations

import errno
import socket
from typing import Any

BACKLOG = 128  # aiohttp's default


class ListenError(Exception):
    """`server.listen` cannot be bound. `str()` is one line naming the address and what to do."""


def bind(listen: str, host: str, port: int) -> list[socket.socket]:
    """Listening sockets (not yet served) for every address `host` resolves to, as aiohttp would bind them:
    SO_REUSEADDR (a restart does not wait for old connections in TIME_WAIT; Linux still refuses a second
    listener on the port), IPv6 sockets IPv6-only. Raises ListenError."""
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in _addresses(host, port):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ListenError(
                f"cannot listen on {listen}: the address is in use (another bcd, or another program): stop it, "
                "or set server.listen to a free address"
            ) from exc
        raise ListenError(f"cannot listen on {listen} ({exc.strerror or exc}): check server.listen") from exc
    return sockets


def _addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    unique = {(info[0], info[4]): info for info in infos}  # one socket per address, whatever the resolver repeats
    return list(unique.values())
