"""The dns probe against a real (tiny) DNS server on loopback, over UDP and TCP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from tests.helpers import free_port
from tests.helpers.dns_server import DnsServer, dns_server, garbage_udp_server, mute_udp_server

RECORDS = {
    ("db.example.", "A"): ["10.0.0.1", "10.0.0.2"],
    ("db.example.", "AAAA"): ["2001:db8::1"],
    ("www.example.", "CNAME"): ["db.example."],
    ("example.", "MX"): ["10 Mail.Example."],
    ("example.", "TXT"): ['"v=spf1 -all"'],
    ("ctl.example.", "TXT"): ['"\\027[31mred\\008"'],  # ESC [31m red BACKSPACE
}


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with dns_server(RECORDS, servfail=("broken.example.",)) as running:
        yield running


async def probe(ctx: ProbeContext, port: int, timeout: float = 2.0, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "dns": {"server": "127.0.0.1", "port": port, **spec}})
    return await build_probe(config, timeout, ctx).run()


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"name": "db.example"}, "A db.example: 10.0.0.1, 10.0.0.2"),
        ({"name": "DB.Example.", "expect": ["10.0.0.2"]}, "A DB.Example.: 10.0.0.1, 10.0.0.2"),
        ({"name": "www.example", "expect": ["10.0.0.1", "10.0.0.2"]}, "A www.example: 10.0.0.1, 10.0.0.2"),
        ({"name": "db.example", "type": "AAAA", "expect": ["2001:0DB8:0::1"]}, "AAAA db.example: 2001:db8::1"),
        ({"name": "example", "type": "MX", "expect": ["10 MAIL.example"]}, "MX example: 10 Mail.example."),
        ({"name": "example", "type": "TXT", "expect": ["v=spf1 -all"]}, "TXT example: v=spf1 -all"),
        ({"name": "db.example", "transport": "tcp", "expect": ["10.0.0.1"]}, "A db.example: 10.0.0.1, 10.0.0.2"),
    ],
)
async def test_answers_that_pass(ctx: ProbeContext, server: DnsServer, spec: dict[str, Any], reason: str) -> None:
    result = await probe(ctx, server.port, **spec)
    assert (result.result, result.reason) == (Result.OK, reason)
    assert server.queries == 1


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"name": "db.example", "expect": ["10.0.0.9", "10.0.0.1"]}, "A db.example lacks 10.0.0.9 (got 10.0.0.1, 10.0.0.2)"),
        ({"name": "nope.example"}, "NXDOMAIN for nope.example from 127.0.0.1:{port}"),
        ({"name": "broken.example"}, "SERVFAIL for broken.example from 127.0.0.1:{port}"),
        ({"name": "example", "type": "A"}, "no A records for example from 127.0.0.1:{port}"),
        ({"name": "nope.example", "transport": "tcp"}, "NXDOMAIN for nope.example from 127.0.0.1:{port}"),
    ],
)
async def test_answers_that_fail(ctx: ProbeContext, server: DnsServer, spec: dict[str, Any], reason: str) -> None:
    result = await probe(ctx, server.port, **spec)
    assert (result.result, result.reason) == (Result.FAIL, reason.format(port=server.port))


async def test_server_not_answering_times_out_on_time(ctx: ProbeContext) -> None:
    async with mute_udp_server() as port:
        started = time.monotonic()
        result = await probe(ctx, port, timeout=0.5, name="db.example")
        assert time.monotonic() - started < 0.5 + 0.5
    assert result.result is Result.FAIL
    assert result.reason == f"timeout after 0.5s waiting for 127.0.0.1:{port} to answer A db.example"


async def test_nothing_listening_over_tcp(ctx: ProbeContext) -> None:
    port = free_port()
    result = await probe(ctx, port, name="db.example", transport="tcp")
    assert (result.result, result.reason) == (Result.FAIL, f"connection refused to 127.0.0.1:{port}")


async def test_control_bytes_in_an_answer_are_escaped_in_the_reason(ctx: ProbeContext, server: DnsServer) -> None:
    result = await probe(ctx, server.port, name="ctl.example", type="TXT")
    assert result.reason == "TXT ctl.example: \\x1b[31mred\\x08"


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (lambda query: b"garbage", "The DNS packet passed to from_wire() is too short."),
        # the query's id, then flags QR|TC and counts that promise records which are not there: not a
        # truncated answer to retry over TCP (nothing listens there), a malformed one
        (lambda query: query[:2] + b"\x83\x80\x00\x01\x00\x01\x00\x00\x00\x00" + b"\xff" * 20,
         "A DNS compression pointer points forward instead of backward."),
    ],
    ids=["short", "truncated-garbage"],
)
async def test_a_malformed_answer_is_reported_as_such(ctx: ProbeContext, reply: Any, error: str) -> None:
    async with garbage_udp_server(reply) as port:
        result = await probe(ctx, port, name="db.example")
    assert (result.result, result.reason) == (Result.FAIL, f"malformed DNS answer from 127.0.0.1:{port}: {error}")


async def test_a_truncated_udp_answer_is_asked_again_over_tcp(ctx: ProbeContext) -> None:
    async with dns_server(RECORDS, truncate_udp=True) as server:
        result = await probe(ctx, server.port, name="db.example")
        assert (result.result, result.reason) == (Result.OK, "A db.example: 10.0.0.1, 10.0.0.2")
        assert server.queries == 2  # UDP (truncated), then TCP
