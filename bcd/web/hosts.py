"""`server.allowed_hosts`: the Host header must name this server, so that a web page whose name an attacker
re-points at 127.0.0.1 (DNS rebinding) cannot read the API from a browser. /healthz and /readyz answer any Host."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from bcd.config import Server, split_listen
from bcd.web.context import CONTEXT
from bcd.web.problems import Handler, problem

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = frozenset({"/healthz", "/readyz"})  # systemd units, load balancers and probes of bcd itself


class AllowedHosts:
    """Entries are `name` (any port) or `name:port`; IPv6 addresses in brackets; case does not matter."""

    def __init__(self, entries: tuple[str, ...], any_address: bool) -> None:
        self.names = frozenset(e.lower() for e in entries if _split(e.lower())[1] is None)
        self.with_port = frozenset(e.lower() for e in entries if _split(e.lower())[1] is not None)
        self.any_address = any_address

    def allows(self, host: str) -> bool:
        host = host.strip().lower()
        name, _ = _split(host)
        if host in self.with_port or name in self.names:
            return True
        return self.any_address and _is_address(name)


def _split(host: str) -> tuple[str, str | None]:
    """`name:port` → (name, port); `[v6]:port` keeps the brackets on the name."""
    if host.startswith("["):
        end = host.find("]")
        rest = host[end + 1:]
        return host[: end + 1], (rest[1:] if rest.startswith(":") else None)
    name, colon, port = host.partition(":")
    return name, (port if colon else None)


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4)
def allowed_hosts(server: Server) -> AllowedHosts:
    if server.allowed_hosts is not None:
        return AllowedHosts(server.allowed_hosts, any_address=False)
    host, _ = split_listen(server.listen)
    listen_host = f"[{host}]" if ":" in host else host
    return AllowedHosts((listen_host, *LOOPBACK_NAMES), any_address=True)


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """421 problem+json for a Host header that names another server (no Host header: nothing to check)."""
    host = request.headers.get("Host")
    if host is None or request.path in ANY_HOST:
        return await handler(request)
    if not allowed_hosts(request.app[CONTEXT].server).allows(host):
        return problem(421, "Misdirected Request", f"this server does not answer for host {host[:100]!r}; "
                       "add it to server.allowed_hosts")
    return await handler(request)
