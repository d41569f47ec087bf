"""A certificate that has already expired fails a TLS probe that watches expiry (`cert_expiry_warn`), even
with `tls_verify: false`; one expiring within `cert_expiry_warn` warns. Real self-signed certificates served
on loopback (HTTP by aiohttp, TCP by asyncio)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from tests.helpers import CertFiles, make_expired_cert, serve_http

EXPIRED = "2020-01-02 00:00 UTC"


@pytest.fixture(scope="module")
def expired_cert(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return make_expired_cert(tmp_path_factory.mktemp("expired"))


async def probe(ctx: ProbeContext, kind: str, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", kind: spec})
    return await build_probe(config, 2.0, ctx).run()


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="UP")


async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"+OK ready\r\n")
    await writer.drain()
    writer.close()


async def https_url(cert: CertFiles) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/health", ok)
    async with serve_http(app, cert.server_context()) as url:
        yield f"{url}/health"


@pytest.fixture
async def expired_https(expired_cert: CertFiles) -> AsyncIterator[str]:
    async for url in https_url(expired_cert):
        yield url


@pytest.fixture
async def expired_tls_port(expired_cert: CertFiles) -> AsyncIterator[int]:
    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=expired_cert.server_context())
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def expired_reason(result: ProbeResult) -> bool:
    return result.reason.startswith("certificate of 127.0.0.1 expired ") and result.reason.endswith(f"({EXPIRED})")


async def test_http_expired_certificate_fails_without_verification(ctx: ProbeContext, expired_https: str) -> None:
    result = await probe(ctx, "http", url=expired_https, tls_verify=False, cert_expiry_warn="14d")
    assert result.result is Result.FAIL
    assert expired_reason(result), result.reason
    unwatched = await probe(ctx, "http", url=expired_https, tls_verify=False)
    assert unwatched.result is Result.OK  # no cert_expiry_warn: the expiry is reported, not judged
    assert unwatched.cert_expiry is not None and unwatched.cert_expiry < ctx.wall_clock()


async def test_http_expired_certificate_fails_verification(ctx: ProbeContext, expired_https: str,
                                                            expired_cert: CertFiles) -> None:
    result = await probe(ctx, "http", url=expired_https, ca_file=str(expired_cert.cert), cert_expiry_warn="14d")
    assert result.result is Result.FAIL
    assert "certificate has expired" in result.reason


async def test_tcp_expired_certificate_fails_without_verification(ctx: ProbeContext, expired_tls_port: int) -> None:
    spec = {"host": "127.0.0.1", "port": expired_tls_port, "tls": True, "tls_verify": False, "expect": "^\\+OK"}
    result = await probe(ctx, "tcp", **spec, cert_expiry_warn="14d")
    assert result.result is Result.FAIL
    assert expired_reason(result), result.reason
    assert (await probe(ctx, "tcp", **spec)).result is Result.OK


async def test_tcp_certificate_expiring_soon_warns(ctx: ProbeContext, short_lived_cert: CertFiles) -> None:
    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=short_lived_cert.server_context())
    port = server.sockets[0].getsockname()[1]
    try:
        spec = {"host": "127.0.0.1", "port": port, "tls": True, "ca_file": str(short_lived_cert.cert)}
        soon = await probe(ctx, "tcp", **spec, cert_expiry_warn="14d")
        later = await probe(ctx, "tcp", **spec, cert_expiry_warn="12h")
    finally:
        server.close()
        await server.wait_closed()
    assert soon.result is Result.WARN
    assert soon.reason.startswith("certificate of 127.0.0.1 expires in 23h (")
    assert soon.reason.endswith("UTC), within cert_expiry_warn 14d")
    assert later.result is Result.OK

