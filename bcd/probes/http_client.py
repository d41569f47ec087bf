"""One HTTP/1.1 exchange on a new connection: what an `http:` probe needs, and nothing more.

A request is written on a fresh connection (`Connection: close`), and the reply is parsed by httptools
(llhttp, the parser uvicorn and aiohttp are built on) until the probe has what it needs: the status line and
headers, and the body only when a `body_regex` must see it. No pool, cookies, redirects, retries or
decompression: a probe must see each server exactly as it answers.

Why not aiohttp's client, which bcd uses for runbook steps, webhooks and etcd: measured on a 2-core VM, an
aiohttp GET on a new connection costs about 470 µs of CPU against about 100 µs for this exchange, and at
10,000 probes every 10 s that difference is most of a core (see bench/).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import sys
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import aiohappyeyeballs
import httptools
from yarl import URL

HAPPY_EYEBALLS_DELAY = 0.25  # RFC 8305's recommended head start of the preferred address family
SSL_SHUTDOWN_TIMEOUT = 1.0  # a TLS goodbye never keeps a finished probe's connection for long
_KEPT_HEADERS = frozenset({b"location", b"content-type", b"content-length", b"transfer-encoding"})


class HttpExchangeError(Exception):
    """The server answered something that is not a complete HTTP response."""


class InvalidResponse(HttpExchangeError):
    """The bytes received do not parse as an HTTP/1.x response."""


class ClosedEarly(HttpExchangeError):
    """The connection closed before the status line and headers were complete."""


class BrokenBody(HttpExchangeError):
    """The connection closed in the middle of a body whose length was announced."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]  # only Location, Content-Type, Content-Length, Transfer-Encoding; lower-case names
    body: bytes  # at most the requested number of bytes; empty when the body was not read
    peer_cert: bytes | None  # DER of the server's certificate (https)

    @property
    def charset(self) -> str | None:
        for part in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = part.strip().partition("=")
            if name.lower() == "charset" and value:
                return value.strip('"')
        return None


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """A request prepared once per probe: the bytes to send and where to send them."""

    host: str
    port: int
    tls: ssl.SSLContext | None
    payload: bytes
    read_body: bool
    numeric: bool  # host is an IP address: no resolution

    @classmethod
    def build(
        cls,
        url: URL,
        method: str,
        *,
        headers: dict[str, str],
        body: str | None,
        user_agent: str,
        tls: ssl.SSLContext | None,
        read_body: bool,
    ) -> HttpRequest:
        """`headers` are validated by the spec (tokens as names, no line breaks in values)."""
        fields = {"host": ("Host", url.host_port_subcomponent or ""), "user-agent": ("User-Agent", user_agent),
                  "accept": ("Accept", "*/*")}
        if url.user is not None:
            token = b64encode(f"{url.user}:{url.password or ''}".encode()).decode()
            fields["authorization"] = ("Authorization", f"Basic {token}")
        for name, value in headers.items():
            fields[name.lower()] = (name, value)
        data = (body or "").encode()
        if data or method in ("POST", "PUT"):
            fields["content-length"] = ("Content-Length", str(len(data)))
        fields["connection"] = ("Connection", "close")
        head = f"{method} {url.raw_path_qs or '/'} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in fields.values())
        host = sys.intern(url.raw_host or "")  # the probes of one host share its name
        return cls(host=host, port=url.port or 0, tls=tls, payload=head.encode("latin-1") + b"\r\n" + data,
                   read_body=read_body and method != "HEAD", numeric=_is_ip(host))


async def exchange(
    request: HttpRequest, on_phase: Callable[[str], None], body_limit: int, body_done: Callable[[bytes], bool]
) -> Reply:
    """Connect, send, and read the reply; `on_phase` hears "resolving", "connecting", "connected" and
    "reading". The body is read (only when `request.read_body`) until it ends, `body_limit` bytes have come,
    or `body_done(body)` says enough. Raises OSError/ssl errors from connecting and HttpExchangeError;
    cancelling closes the connection."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Reply] = loop.create_future()
    wanted = body_limit if request.read_body else -1
    protocol = _Exchange(request.payload, wanted, body_done, done, on_phase)
    tls: dict[str, Any] = {}
    if request.tls is not None:
        tls = {"ssl": request.tls, "server_hostname": request.host, "ssl_shutdown_timeout": SSL_SHUTDOWN_TIMEOUT}
    try:  # however it ends (a refused or timed-out connect too), the parser's cycle is broken
        if request.numeric:
            on_phase("connecting")
            await loop.create_connection(lambda: protocol, request.host, request.port, **tls)
        else:
            on_phase("resolving")
            infos = await loop.getaddrinfo(request.host, request.port, type=socket.SOCK_STREAM)
            on_phase("connecting")
            sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
            await loop.create_connection(lambda: protocol, sock=sock, **tls)
        return await done
    finally:
        protocol.close()


class _Exchange(asyncio.Protocol):
    """Sends the request once connected; feeds the reply to httptools; resolves `done` once it has enough."""

    def __init__(self, payload: bytes, body_limit: int, body_done: Callable[[bytes], bool],
                 done: asyncio.Future[Reply], on_phase: Callable[[str], None]) -> None:
        self._payload = payload
        self._limit = body_limit  # -1: the body is not read
        self._body_done = body_done
        self._done = done
        self._on_phase = on_phase
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._headers: dict[str, str] = {}
        self._status = 0
        self._body = bytearray()
        self._checked = 0
        self._peer_cert: bytes | None = None

    # -- transport side ---------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self._transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._peer_cert = ssl_object.getpeercert(binary_form=True)
        self._on_phase("connected")
        transport.write(self._payload)

    def data_received(self, data: bytes) -> None:
        if self._parser is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish()  # a 101 Switching Protocols: the status is all a probe needs
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(str(exc) or type(exc).__name__))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._done.done():
            return
        if not self._status:
            self._fail(ClosedEarly() if exc is None else exc)
        elif exc is not None or self._headers.keys() & {"content-length", "transfer-encoding"}:
            # the headers announced a length (or chunks) that never fully came
            self._fail(BrokenBody(f"connection closed after {len(self._body)} bytes of the body"))
        else:
            self._finish()  # a body delimited by the end of the connection

    def close(self) -> None:
        self._parser = None
        if self._transport is not None:
            self._transport.close()

    # -- httptools callbacks ----------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in _KEPT_HEADERS:
            self._headers[lowered.decode("latin-1")] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self._status = self._parser.get_status_code()
        if self._limit < 0:
            self._finish()
        else:
            self._on_phase("reading")

    def on_body(self, body: bytes) -> None:
        if self._done.done():
            return
        self._body += body[: self._limit - len(self._body)]
        if len(self._body) >= self._limit:
            self._finish()
        elif len(self._body) - self._checked >= 16384 or self._checked == 0:
            self._checked = len(self._body)
            if self._body_done(bytes(self._body)):
                self._finish()

    def on_message_complete(self) -> None:
        self._finish()

    # -- outcome ----------------------------------------------------------------------------------------
    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(Reply(self._status, self._headers, bytes(self._body), self._peer_cert))
        self._parser = None  # it refers back to us: without this, every exchange is a cycle for the GC

    def _fail(self, exc: BaseException) -> None:
        if not self._done.done():
            self._done.set_exception(exc)
        self._parser = None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
