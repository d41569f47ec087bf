"""The rest of the API against the daemon subprocess: OpenAPI that validates and matches the server,
maintenance, events (paginated and live), request limits; and the CLI that speaks it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from openapi_spec_validator import validate

from bcd.web.openapi import document
from tests.helpers.api import VIEWER, Api, api_daemon
from tests.helpers.daemon import running
from tests.helpers.targets import HttpTarget


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[Api, HttpTarget, HttpTarget]]:
    async with api_daemon(tmp_path) as started:
        yield started


def schema(name: str) -> dict[str, Any]:
    doc = document()
    return {**doc["components"]["schemas"][name], "$defs": {}, "components": doc["components"]}


def check(instance: Any, name: str) -> None:
    doc = document()
    resolver_doc = {"components": doc["components"], **doc["components"]["schemas"][name]}
    jsonschema.Draft202012Validator(resolver_doc).validate(instance)


def test_openapi_document_is_valid_and_describes_every_route() -> None:
    from bcd.web.server import build_app

    doc = document()
    validate(doc)
    app = build_app(None)  # type: ignore[arg-type]  # routes only; no request is served
    served = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None
              and r.method != "HEAD"}
    described = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    served = {(m, p) for m, p in served if not p.startswith("/static") and p != "/"}
    assert served == described


async def test_responses_match_the_document(api: tuple[Api, HttpTarget, HttpTarget]) -> None:
    daemon, _, _ = api
    status, _, services = await daemon.call("GET", "/api/v1/services", token=VIEWER)
    assert status == 200
    for service in services["services"]:
        check(service, "Service")
    status, _, run = await daemon.call("POST", "/api/v1/services/payroll/failover",
                                       body={"reason": "drill", "dry_run": True, "force": True})
    assert status == 202, run
    check(run, "Run")
    async def some_events() -> Any:
        status, _, page = await daemon.call("GET", "/api/v1/events?tail=5", token=VIEWER)
        assert status == 200
        return page if page["events"] else None

    events = await daemon.wait_until(some_events)  # the journal commits in groups, within 50 ms
    for event in events["events"]:
        check(event, "Event")
    status, _, served = await daemon.call("GET", "/api/v1/openapi.json", token=None)
    assert status == 200 and served == json.loads(json.dumps(document()))


async def test_reads_need_a_token_when_tokens_are_configured(api: tuple[Api, HttpTarget, HttpTarget]) -> None:
    daemon, _, _ = api
    status, content_type, problem = await daemon.call("GET", "/api/v1/services", token=None)
    assert (status, content_type) == (401, "application/problem+json")
    assert problem["status"] == 401
    status, _, _ = await daemon.call("GET", "/api/v1/services", token="wrong")
    assert status == 401
    status, _, _ = await daemon.call("POST", "/api/v1/services/payroll/ack", token=VIEWER, body={})
    assert status == 403
    status, content_type, _ = await daemon.call("GET", "/metrics", token=None)  # a read like the others
    assert (status, content_type) == (401, "application/problem+json")
    status, _, text = await daemon.call("GET", "/metrics", token=VIEWER)
    assert status == 200 and "bcd_build_info" in text


async def test_maintenance_start_and_end_through_api_and_cli(api: tuple[Api, HttpTarget, HttpTarget]) -> None:
    daemon, _, _ = api
    status, _, started = await daemon.call("POST", "/api/v1/services/payroll/maintenance",
                                           body={"site": "hampshire", "duration": "2h", "reason": "patching"})
    assert status == 201 and started["sites"] == ["hampshire"]
    _, _, service = await daemon.call("GET", "/api/v1/services/payroll", token=VIEWER)
    assert service["sites"]["hampshire"]["state"] == "maintenance"
    assert "alice: patching" in service["sites"]["hampshire"]["reason"]
    ended = await asyncio.to_thread(daemon.cli, "maintenance", "payroll", "--end")
    assert ended.returncode == 0, ended.stderr
    assert "maintenance ended for dorset" not in ended.stdout and "hampshire" in ended.stdout
    _, _, service = await daemon.call("GET", "/api/v1/services/payroll", token=VIEWER)
    assert service["sites"]["hampshire"]["state"] == "up"
    whole = await asyncio.to_thread(daemon.cli, "maintenance", "payroll", "--for", "30m", "--reason", "move")
    assert whole.returncode == 0 and "dorset, hampshire in maintenance until" in whole.stdout
    refused = await asyncio.to_thread(daemon.cli, "maintenance", "payroll", "--for", "soon", "--reason", "x")
    assert refused.returncode == 1 and "HTTP 400" in refused.stderr


async def test_maintenance_blocks_automation_and_survives_restart(
    api: tuple[Api, HttpTarget, HttpTarget], tmp_path: Path
) -> None:
    daemon, dorset, _ = api
    await daemon.call("POST", "/api/v1/services/payroll/maintenance", body={"duration": "1h", "reason": "works"})
    dorset.status = 503
    await daemon.wait_log(lambda e: e.get("event") == "service_status" and e.get("guard") == "maintenance")
    assert await daemon.stop() == 0
    async with running(Api(daemon.config_path, daemon.port)) as again:
        _, _, service = await again.call("GET", "/api/v1/services/payroll", token=VIEWER)
        assert service["sites"]["dorset"]["state"] == "maintenance"
        assert service["status"] == "blocked" and service["guard"] == "maintenance"


async def test_events_pagination_tail_and_service_filter(api: tuple[Api, HttpTarget, HttpTarget]) -> None:
    daemon, _, _ = api
    async def three_events() -> bool:
        _, _, page = await daemon.call("GET", "/api/v1/events?tail=3&service=payroll", token=VIEWER)
        return len(page["events"]) == 3

    await daemon.wait_until(three_events)  # startup transitions, committed in groups within 50 ms
    _, _, first = await daemon.call("GET", "/api/v1/events?limit=2", token=VIEWER)
    assert len(first["events"]) == 2
    _, _, second = await daemon.call("GET", f"/api/v1/events?since={first['next']}&limit=2", token=VIEWER)
    assert second["events"][0]["id"] > first["events"][-1]["id"]
    _, _, tail = await daemon.call("GET", "/api/v1/events?tail=1&service=payroll", token=VIEWER)
    assert len(tail["events"]) == 1 and tail["events"][0]["service"] == "payroll"
    status, _, _ = await daemon.call("GET", "/api/v1/events?service=nope", token=VIEWER)
    assert status == 404
    status, _, _ = await daemon.call("GET", "/api/v1/events?since=abc", token=VIEWER)
    assert status == 400


async def test_event_stream_delivers_a_transition_live(api: tuple[Api, HttpTarget, HttpTarget]) -> None:
    daemon, dorset, _ = api
    async with aiohttp.ClientSession() as session, session.get(
        daemon.url + "/api/v1/events/stream?service=payroll", headers={"Authorization": f"Bearer {VIEWER}"}
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert (await response.content.readline()).startswith(b": connected")
        dorset.status = 503
        async with asyncio.timeout(10):
            while True:
                line = (await response.content.readline()).decode()
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event["kind"] == "site_transition" and event["to"] in ("degraded", "down"):
                    break  # (the startup transitions to up may come first: they are committed in groups)
    assert event["service"] == "payroll" and event["site"] == "dorset"


async def test_bad_requests_get_problems_and_the_daemon_keeps_running(
    api: tuple[Api, HttpTarget, HttpTarget],
) -> None:
    daemon, _, _ = api
    status, content_type, problem = await daemon.call("POST", "/api/v1/services/payroll/failover", raw=b"{not json")
    assert (status, content_type) == (400, "application/problem+json") and "not JSON" in problem["detail"]
    status, _, problem = await daemon.call("POST", "/api/v1/services/payroll/failover", body={"reason": 5})
    assert status == 400 and problem["errors"][0]["field"] == "reason"
    status, content_type, _ = await daemon.call("POST", "/api/v1/services/payroll/failover", raw=b"x" * 200_000)
    assert (status, content_type) == (413, "application/problem+json")
    status, _, _ = await daemon.call("GET", "/api/v1/nope", token=VIEWER)
    assert status == 404
    status, _, _ = await daemon.call("GET", "/healthz", token=None)
    assert status == 200


async def test_cli_status_and_events(api: tuple[Api, HttpTarget, HttpTarget]) -> None:
    daemon, _, _ = api
    table = await asyncio.to_thread(daemon.cli, "status", token=VIEWER)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["SERVICE", "STATUS", "ACTIVE"]
    assert "payroll" in table.stdout and "\x1b[" not in table.stdout  # plain on a pipe
    as_json = await asyncio.to_thread(daemon.cli, "status", "--json", token=VIEWER)
    assert json.loads(as_json.stdout)["services"][0]["name"] == "payroll"
    events = await asyncio.to_thread(daemon.cli, "events", "--service", "payroll", "--limit", "3", token=VIEWER)
    assert events.returncode == 0 and 1 <= len(events.stdout.splitlines()) <= 3
    unreachable = subprocess.run([sys.executable, "-m", "bcd", "status", "--url", "http://127.0.0.1:9"],
                                 capture_output=True, text=True, timeout=30, check=False)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
