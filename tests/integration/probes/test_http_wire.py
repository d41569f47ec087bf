"""The http probe against hand-written servers on loopback: the exact bytes sent, and replies that are
truncated, malformed, chunked or delimited by the end of the connection."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from tests.helpers import free_port
from tests.helpers.targets import silent_server

Reply = Callable[[bytes], list[bytes]]
"""Given the request's head, the pieces the server writes before it closes the connection."""


class WireServer:
    """Reads one request head per connection, writes the scripted reply pieces, closes."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        request = head + (await reader.readexactly(length) if length else b"")
        self.requests.append(request)
        for piece in self.reply(request):
            writer.write(piece)
            await writer.drain()
        writer.close()


@asynccontextmanager
async def wire_server(reply: Reply) -> AsyncIterator[WireServer]:
    wire = WireServer(reply)
    server = await asyncio.start_server(wire.handle, "127.0.0.1", 0)
    wire.port = server.sockets[0].getsockname()[1]
    try:
        yield wire
    finally:
        server.close()
        await server.wait_closed()


async def probe(ctx: ProbeContext, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "http": spec})
    return await build_probe(config, 2.0, ctx).run()


def fixed(*pieces: bytes) -> Reply:
    return lambda request: list(pieces)


async def test_request_carries_host_agent_credentials_headers_and_close() -> None:
    ctx = ProbeContext(user_agent="bcd/test (vantage dorset)")
    async with wire_server(fixed(b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
        url = f"http://ops:pa55@127.0.0.1:{server.port}/health?deep=1"
        result = await probe(ctx, url=url, method="POST", body="ping", headers={"X-Token": "s3cret"})
    assert result.result is Result.OK, result.reason
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /health?deep=1 HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Host"] == f"127.0.0.1:{server.port}"
    assert fields["User-Agent"] == "bcd/test (vantage dorset)"
    assert fields["Authorization"] == "Basic b3BzOnBhNTU="  # ops:pa55
    assert fields["X-Token"] == "s3cret"
    assert fields["Connection"] == "close"
    assert fields["Content-Length"] == "4" and body == b"ping"


async def test_header_given_in_the_spec_replaces_the_default() -> None:
    async with wire_server(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/", headers={"user-agent": "custom"})
    head = server.requests[0].decode()
    assert "\r\nuser-agent: custom\r\n" in head
    assert "User-Agent" not in head


async def test_a_name_is_resolved_and_the_address_that_answers_is_used() -> None:
    # "localhost" resolves to ::1 and 127.0.0.1 here; the server listens on 127.0.0.1 only
    async with wire_server(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nUP")) as server:
        result = await probe(ProbeContext(), url=f"http://localhost:{server.port}/health", body_regex="UP")
    assert result.result is Result.OK, result.reason
    assert result.reason.startswith(f"HTTP 200 from http://localhost:{server.port}/health in ")
    assert f"Host: localhost:{server.port}\r\n" in server.requests[0].decode()


async def test_connection_closed_before_the_headers_end() -> None:
    async with wire_server(fixed(b"HTTP/1.1 200 OK\r\nContent-")) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/")
    assert result.result is Result.FAIL
    assert result.reason == f"127.0.0.1:{server.port} closed the connection without a complete response"


async def test_bytes_that_are_not_http() -> None:
    async with wire_server(fixed(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/")
    assert result.result is Result.FAIL
    assert result.reason.startswith(f"invalid HTTP response from http://127.0.0.1:{server.port}/: ")


async def test_body_shorter_than_its_content_length_is_broken() -> None:
    reply = fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nstatus: ")
    async with wire_server(reply) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/", body_regex="UP")
    assert result.result is Result.FAIL
    assert result.reason == (
        f"broken body from http://127.0.0.1:{server.port}/: connection closed after 8 bytes of the body"
    )


async def test_chunked_body_is_matched_across_chunks() -> None:
    reply = fixed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"8\r\nstatus: \r\n", b"2\r\nUP\r\n",
                  b"0\r\n\r\n")
    async with wire_server(reply) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/", body_regex="status: UP$")
    assert result.result is Result.OK, result.reason


async def test_body_ended_by_closing_the_connection_is_complete() -> None:
    reply = fixed(b"HTTP/1.0 200 OK\r\n\r\n", b"status: ", b"UP")
    async with wire_server(reply) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/", body_regex="status: UP$")
    assert result.result is Result.OK, result.reason


async def test_body_in_the_declared_charset_is_decoded() -> None:
    reply = fixed(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\nContent-Length: 4\r\n\r\nK\xf6ln")
    async with wire_server(reply) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/", body_regex="Köln")
    assert result.result is Result.OK, result.reason


async def test_head_request_does_not_wait_for_a_body() -> None:
    reply = fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n")  # HEAD: the length of a body never sent
    async with wire_server(reply) as server:
        result = await probe(ProbeContext(), url=f"http://127.0.0.1:{server.port}/", method="HEAD")
    assert result.result is Result.OK, result.reason
    assert server.requests[0].startswith(b"HEAD / HTTP/1.1\r\n")


@pytest.mark.parametrize(("headers", "message"), [
    ({"X-Evil": "a\r\nInjected: yes"}, "header X-Evil contains a line break"),
    ({"Bad Name": "x"}, "header name 'Bad Name' is not a valid HTTP token"),
])
def test_headers_that_would_break_the_request_are_config_errors(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(ProbeConfig).validate_python({"name": "t", "http": {"url": "http://127.0.0.1/", "headers": headers}})


async def test_an_exchange_leaves_no_cycle_for_the_garbage_collector() -> None:
    # bcd makes full collections rare (bcd/heap.py): a probe run must be freed by reference counting alone
    from bcd.probes.http_client import _Exchange

    async with wire_server(fixed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nUP")) as server:
        config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "http": {"url": f"http://127.0.0.1:{server.port}/"}})
        built = build_probe(config, 2.0, ProbeContext())
        gc.collect()  # what earlier tests left
        gc.disable()
        try:
            before = sum(isinstance(thing, _Exchange) for thing in gc.get_objects())
            for _ in range(50):
                assert (await built.run()).result is Result.OK
            alive = sum(isinstance(thing, _Exchange) for thing in gc.get_objects()) - before
        finally:
            gc.enable()
    assert alive <= 1  # the last one may wait for its connection_lost


@pytest.mark.parametrize(("scheme", "target", "reason"), [
    ("http", "refused", "connection refused"),
    ("https", "refused", "connection refused"),
    ("http", "silent", "timeout after 0.3s waiting for response"),
    ("https", "silent", "timeout after 0.3s connecting"),  # the TLS handshake never ends
])
async def test_a_failed_exchange_leaves_no_cycle_for_the_garbage_collector(scheme: str, target: str, reason: str) -> None:
    # a run whose objects are frozen while it is in flight (bcd.heap.freeze_survivors) is only freed by reference
    # counting: a cycle it leaves when it fails is never collected
    from bcd.probes.http_client import _Exchange

    async with silent_server() as silent:
        port = silent if target == "silent" else free_port()  # free: refused
        config = TypeAdapter(ProbeConfig).validate_python(
            {"name": "t", "http": {"url": f"{scheme}://127.0.0.1:{port}/", "tls_verify": False}})
        built = build_probe(config, 0.3, ProbeContext())
        gc.collect()  # what earlier tests left
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds goes to gc.garbage, for us to count
        try:
            for _ in range(3):
                result = await built.run()
                assert result.result is Result.FAIL and reason in result.reason, result.reason
            gc.collect()
            cycles = sum(isinstance(thing, _Exchange) for thing in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert cycles == 0
