"""`json_values:` of the http probe against a real aiohttp server on loopback: named numbers read from the JSON
answer by dotted path become the observation's perfdata; a value missing, not a number, or a body that is not
JSON or too large is `U` with the reason saying why, and the probe's own verdict stands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from tests.helpers import serve_http

ANSWERS: dict[str, tuple[int, str]] = {
    "replica": (200, '{"replication": {"lag_seconds": 2.5, "members": [{"lag": 7}], "state": "streaming"}}'),
    "notjson": (200, "lag: 2.5"),
    "big": (200, '{"pad": "' + "x" * 5000 + '", "replication": {"lag_seconds": 1}}'),
    "down": (503, '{"replication": {"lag_seconds": 2.5}}'),
}


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async def answer(request: web.Request) -> web.Response:
        status, text = ANSWERS[request.match_info["name"]]
        return web.Response(status=status, text=text, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{name}", answer)
    async with serve_http(app) as url:
        yield url


async def probe(ctx: ProbeContext, url: str, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "replica", "http": {"url": url, **spec}})
    return await build_probe(config, 2.0, ctx).run()


async def test_named_values_are_read_by_dotted_path(ctx: ProbeContext, base: str) -> None:
    values = {"lag": "replication.lag_seconds", "first": "replication.members.0.lag"}
    result = await probe(ctx, f"{base}/replica", json_values=values)
    assert result.result is Result.OK
    assert result.perfdata == (("lag", "2.5"), ("first", "7.0"))
    assert result.reason.startswith(f"HTTP 200 from {base}/replica in ")


async def test_a_value_missing_or_not_a_number_is_unknown_and_said(ctx: ProbeContext, base: str) -> None:
    result = await probe(ctx, f"{base}/replica", json_values={"lag": "replication.lag", "state": "replication.state"})
    assert result.result is Result.OK
    assert result.perfdata == (("lag", "U"), ("state", "U"))
    assert result.reason.endswith('; lag: no value at replication.lag; state: not a number ("streaming") at '
                                  "replication.state")


@pytest.mark.parametrize(("name", "spec", "said"), [
    ("notjson", {}, "json_values: body is not JSON (Expecting value: line 1 column 1 (char 0))"),
    ("big", {"max_body_bytes": 1024}, "json_values: body larger than max_body_bytes"),
])
async def test_a_body_that_cannot_be_read_leaves_every_value_unknown(ctx: ProbeContext, base: str, name: str,
                                                                     spec: dict[str, Any], said: str) -> None:
    result = await probe(ctx, f"{base}/{name}", json_values={"lag": "replication.lag_seconds"}, **spec)
    assert (result.result, result.perfdata) == (Result.OK, (("lag", "U"),))
    assert result.reason.endswith(f"; {said}")


async def test_a_failed_check_reports_no_values(ctx: ProbeContext, base: str) -> None:
    result = await probe(ctx, f"{base}/down", json_values={"lag": "replication.lag_seconds"})
    assert (result.result, result.perfdata) == (Result.FAIL, ())
    assert result.reason == f"HTTP 503 from {base}/down, expected 2xx"
