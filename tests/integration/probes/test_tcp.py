"""The tcp probe against real asyncio servers on loopback, plain and TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from bcd.probes.tcp import unescape
from tests.helpers import CertFiles, free_port, silent_server

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def tcp_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


class Pong:
    """Reads one line; answers +PONG to PING and -ERR to anything else, then hangs up."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        self.received.append(line)
        writer.write(b"+PONG\r\n" if line.startswith(b"PING") else b"-ERR unknown command\r\n")
        await writer.drain()
        writer.close()


async def probe(ctx: ProbeContext, port: int, timeout: float = 2.0, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "tcp": {"host": "127.0.0.1", "port": port, **spec}})
    return await build_probe(config, timeout, ctx).run()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def test_connect_only(ctx: ProbeContext) -> None:
    async with tcp_server(hang_up) as port:
        result = await probe(ctx, port)
    assert result.result is Result.OK
    assert result.reason.startswith(f"connected to 127.0.0.1:{port} in ")


async def test_send_with_escapes_and_expect(ctx: ProbeContext) -> None:
    pong = Pong()
    async with tcp_server(pong) as port:
        result = await probe(ctx, port, send=r"PING\x00\r\n", expect=r"^\+PONG")
    assert pong.received == [b"PING\x00\r\n"]
    assert result.result is Result.OK
    assert result.reason == rf"reply from 127.0.0.1:{port} matches '^\\+PONG'"


async def test_reply_not_matching(ctx: ProbeContext) -> None:
    async with tcp_server(Pong()) as port:
        result = await probe(ctx, port, send=r"QUIT\n", expect="PONG")
    assert result.result is Result.FAIL
    assert result.reason == (
        f"reply from 127.0.0.1:{port} does not match 'PONG' "
        r"(connection closed; got b'-ERR unknown command\r\n')"
    )


async def test_reply_is_read_up_to_64_kib(ctx: ProbeContext) -> None:
    async def chatter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"x" * 100_000)
        await writer.drain()
        await reader.read()  # keep the connection open until the client leaves
        writer.close()

    async with tcp_server(chatter) as port:
        result = await probe(ctx, port, expect="PONG")
    assert result.result is Result.FAIL
    assert result.reason.startswith(f"reply from 127.0.0.1:{port} does not match 'PONG' (64 KiB read; got b'xxx")


async def test_connection_refused(ctx: ProbeContext) -> None:
    port = free_port()
    result = await probe(ctx, port)
    assert result.result is Result.FAIL
    assert result.reason == f"connection refused to 127.0.0.1:{port}"


async def test_silent_server_times_out_on_time_and_is_hung_up_on(ctx: ProbeContext) -> None:
    async with silent_server() as server:
        started = time.monotonic()
        result = await probe(ctx, server.port, timeout=0.5, send=r"PING\r\n", expect="PONG")
        assert time.monotonic() - started < 0.5 + 0.5
        await server.wait_closed_by_client(1)
    assert result.result is Result.FAIL
    assert result.reason == f"timeout after 0.5s waiting for a reply matching 'PONG' from 127.0.0.1:{server.port} (got nothing)"


async def test_tls_self_signed_fails_verification(ctx: ProbeContext, short_lived_cert: CertFiles) -> None:
    async with tcp_server(Pong(), short_lived_cert.server_context()) as port:
        result = await probe(ctx, port, tls=True)
    assert result.result is Result.FAIL
    assert result.reason.startswith(f"TLS certificate verify failed for 127.0.0.1:{port}: ")


async def test_tls_verify_off_reports_expiry(ctx: ProbeContext, short_lived_cert: CertFiles) -> None:
    async with tcp_server(Pong(), short_lived_cert.server_context()) as port:
        result = await probe(ctx, port, tls=True, tls_verify=False, send=r"PING\r\n", expect="PONG")
    assert result.result is Result.OK, result.reason
    assert result.cert_expiry is not None
    assert abs(result.cert_expiry - (time.time() + 86400)) < 300


async def test_tls_with_ca_file_and_server_name(ctx: ProbeContext, short_lived_cert: CertFiles) -> None:
    async with tcp_server(Pong(), short_lived_cert.server_context()) as port:
        trusted = await probe(ctx, port, tls=True, ca_file=str(short_lived_cert.cert), server_name="localhost")
        wrong_name = await probe(ctx, port, tls=True, ca_file=str(short_lived_cert.cert), server_name="db.example")
    assert trusted.result is Result.OK, trusted.reason
    assert wrong_name.result is Result.FAIL
    assert "Hostname mismatch" in wrong_name.reason


def test_unescape() -> None:
    assert unescape(r"a\tb\\n\x41é\q") == b"a\tb\\nA\xc3\xa9\\q"
