"""The http probe against real aiohttp servers on loopback, plain and TLS."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from tests.helpers import CertFiles, free_port, make_cert, serve_http, silent_server

DAY = 86400.0


PEERS: web.AppKey[list[int]] = web.AppKey("peers")


def make_app() -> web.Application:
    never = asyncio.Event()
    peers: list[int] = []

    async def health(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.Response(text="status: UP")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="status: DOWN")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)  # the behaviour under test: a server that takes 300 ms to answer
        return web.Response(text="status: UP")

    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"status: ")
        await never.wait()  # never finishes the body
        return response

    async def echo(request: web.Request) -> web.Response:
        ok = request.headers.get("X-Token") == "s3cret" and await request.text() == "ping"
        return web.Response(status=200 if ok else 403, text=request.method)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/elsewhere")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 1000 + "status: UP")

    app = web.Application()
    app[PEERS] = peers
    app.router.add_route("*", "/health", health)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/stalls", stalls)
    app.router.add_post("/echo", echo)
    app.router.add_get("/moved", moved)
    app.router.add_get("/big", big)
    return app


@pytest.fixture
async def app() -> web.Application:
    return make_app()


@pytest.fixture
async def base(app: web.Application) -> AsyncIterator[str]:
    async with serve_http(app) as url:
        yield url


@pytest.fixture
async def tls_base(app: web.Application, short_lived_cert: CertFiles) -> AsyncIterator[str]:
    async with serve_http(app, short_lived_cert.server_context()) as url:
        yield url


async def probe(ctx: ProbeContext, timeout: float = 2.0, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "http": spec})
    return await build_probe(config, timeout, ctx).run()


async def test_ok_names_status_and_url(ctx: ProbeContext, base: str) -> None:
    result = await probe(ctx, url=f"{base}/health", body_regex="UP")
    assert result.result is Result.OK
    assert result.reason.startswith(f"HTTP 200 from {base}/health in ")
    assert 0 < result.latency < 2
    assert result.cert_expiry is None


async def test_each_run_uses_a_new_connection(ctx: ProbeContext, app: web.Application, base: str) -> None:
    for _ in range(3):
        assert (await probe(ctx, url=f"{base}/health")).result is Result.OK
    peers: list[int] = app[PEERS]
    assert len(set(peers)) == 3  # three client ports: three connections


@pytest.mark.parametrize(
    ("path", "expect_status", "result", "reason"),
    [
        ("/status/503", None, Result.FAIL, "HTTP 503 from {base}/status/503, expected 2xx"),
        ("/status/204", [200], Result.FAIL, "HTTP 204 from {base}/status/204, expected 200"),
        ("/status/503", [503, 500], Result.OK, "HTTP 503 from {base}/status/503 in "),
        ("/moved", None, Result.FAIL, "HTTP 302 from {base}/moved, expected 2xx (Location: /elsewhere)"),
    ],
)
async def test_status_codes(
    ctx: ProbeContext, base: str, path: str, expect_status: list[int] | None, result: Result, reason: str
) -> None:
    got = await probe(ctx, url=base + path, expect_status=expect_status)
    assert got.result is result
    assert got.reason.startswith(reason.format(base=base))


async def test_body_regex_miss(ctx: ProbeContext, base: str) -> None:
    result = await probe(ctx, url=f"{base}/status/200", body_regex="status: UP$")
    assert result.result is Result.FAIL
    assert result.reason == f"body does not match 'status: UP$' (HTTP 200 from {base}/status/200)"


async def test_body_regex_only_sees_max_body_bytes(ctx: ProbeContext, base: str) -> None:
    assert (await probe(ctx, url=f"{base}/big", body_regex="UP")).result is Result.OK
    cut = await probe(ctx, url=f"{base}/big", body_regex="UP", max_body_bytes=1000)
    assert cut.result is Result.FAIL
    assert cut.reason.startswith("body does not match 'UP'")


async def test_slower_than_max_latency_warns(ctx: ProbeContext, base: str) -> None:
    result = await probe(ctx, url=f"{base}/slow", max_latency="100ms")
    assert result.result is Result.WARN
    assert result.reason.startswith("slow: 0.3")
    assert result.reason.endswith(f"> max_latency 0.1s (HTTP 200 from {base}/slow)")
    assert result.latency >= 0.3


async def test_method_headers_and_body_are_sent(ctx: ProbeContext, base: str) -> None:
    spec: dict[str, Any] = {"url": f"{base}/echo", "method": "POST", "body": "ping"}
    assert (await probe(ctx, headers={"X-Token": "s3cret"}, **spec)).result is Result.OK
    refused = await probe(ctx, headers={"X-Token": "not-the-s3cret"}, **spec)
    assert refused.result is Result.FAIL
    assert "s3cret" not in refused.reason


async def test_credentials_in_the_url_stay_out_of_the_reason(ctx: ProbeContext, base: str) -> None:
    url = base.replace("http://", "http://admin:hunter2@") + "/status/500"
    result = await probe(ctx, url=url)
    assert result.reason == f"HTTP 500 from {base}/status/500, expected 2xx"


async def test_probes_keep_the_configs_url_and_share_their_hosts_name(ctx: ProbeContext) -> None:
    """Tens of thousands of probes are kept: a probe holds the config's URL rather than a copy, and the probes
    of one host hold one string for its name."""
    first, second = (TypeAdapter(ProbeConfig).validate_python({"name": "t", "http": {"url": url}})
                     for url in ("http://127.0.0.1:8080/health", "http://127.0.0.1:8080/status"))
    probes = [build_probe(config, 2.0, ctx) for config in (first, second)]
    assert probes[0]._shown is first.spec.url  # type: ignore[attr-defined]
    assert probes[0]._request.host is probes[1]._request.host == "127.0.0.1"  # type: ignore[attr-defined]


async def test_connection_refused(ctx: ProbeContext) -> None:
    port = free_port()
    result = await probe(ctx, url=f"http://127.0.0.1:{port}/health")
    assert result.result is Result.FAIL
    assert result.reason == f"connection refused to 127.0.0.1:{port}"


async def test_an_ipv6_address_is_shown_in_brackets(ctx: ProbeContext) -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        result = await probe(ctx, url=f"http://[::1]:{port}/health")
    assert result.result is Result.FAIL
    assert result.reason == f"connection refused to [::1]:{port}"


async def test_server_that_never_answers_times_out_on_time(ctx: ProbeContext) -> None:
    async with silent_server() as server:
        url = f"http://127.0.0.1:{server.port}/health"
        started = time.monotonic()
        result = await probe(ctx, timeout=0.5, url=url)
        assert time.monotonic() - started < 0.5 + 0.5
        await server.wait_closed_by_client(1)  # the probe left no connection behind
    assert result.result is Result.FAIL
    assert result.reason == f"timeout after 0.5s waiting for response from {url}"


async def test_body_that_never_ends_times_out_naming_the_body(ctx: ProbeContext, base: str) -> None:
    started = time.monotonic()
    result = await probe(ctx, timeout=0.5, url=f"{base}/stalls", body_regex="UP")
    assert time.monotonic() - started < 0.5 + 0.5
    assert result.result is Result.FAIL
    assert result.reason == f"timeout after 0.5s reading body of {base}/stalls"


async def test_self_signed_certificate_fails_verification(ctx: ProbeContext, tls_base: str) -> None:
    result = await probe(ctx, url=f"{tls_base}/health")
    assert result.result is Result.FAIL
    port = tls_base.rsplit(":", 1)[1]
    assert result.reason.startswith(f"TLS certificate verify failed for 127.0.0.1:{port}: ")
    assert "self-signed" in result.reason or "self signed" in result.reason


async def test_tls_verify_off_accepts_it_and_reports_expiry(ctx: ProbeContext, tls_base: str) -> None:
    result = await probe(ctx, url=f"{tls_base}/health", tls_verify=False)
    assert result.result is Result.OK
    assert result.cert_expiry is not None
    assert abs(result.cert_expiry - (time.time() + DAY)) < 300


async def test_ca_file_trusts_it(ctx: ProbeContext, tls_base: str, short_lived_cert: CertFiles) -> None:
    result = await probe(ctx, url=f"{tls_base}/health", ca_file=str(short_lived_cert.cert))
    assert result.result is Result.OK, result.reason


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_certificate_expiring_within_cert_expiry_warn_warns(
    ctx: ProbeContext, tls_base: str, short_lived_cert: CertFiles, method: str
) -> None:
    spec: dict[str, Any] = {"url": f"{tls_base}/health", "ca_file": str(short_lived_cert.cert), "method": method}
    result = await probe(ctx, cert_expiry_warn="14d", **spec)
    assert result.result is Result.WARN
    assert result.reason.startswith("certificate of 127.0.0.1 expires in 23h (")
    assert result.reason.endswith("UTC), within cert_expiry_warn 14d")
    assert (await probe(ctx, cert_expiry_warn="12h", **spec)).result is Result.OK


async def test_client_certificate_is_presented(
    ctx: ProbeContext, app: web.Application, short_lived_cert: CertFiles, tmp_path: Path
) -> None:
    client = make_cert(tmp_path, days=2, name="client")
    server_context = short_lived_cert.server_context()
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_verify_locations(client.cert)
    async with serve_http(app, server_context) as url:
        spec: dict[str, Any] = {"url": f"{url}/health", "ca_file": str(short_lived_cert.cert)}
        with_cert = await probe(ctx, cert_file=str(client.cert), key_file=str(client.key), **spec)
        without = await probe(ctx, **spec)
    assert with_cert.result is Result.OK, with_cert.reason
    assert without.result is Result.FAIL, without.reason
