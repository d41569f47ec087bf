"""Hostile values a fuzzer or an attacker sends: each is a 400 or 404 problem+json, never a 500, and the daemon
keeps running. One test per case found by hand (issue 11)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.helpers.api import VIEWER, Api, api_daemon

PROBLEM = "application/problem+json"
pytestmark = pytest.mark.asyncio(loop_scope="module")  # one daemon for the module: none of these change it


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    async with api_daemon(tmp_path_factory.mktemp("bounds")) as (started, _, _):
        yield started


async def expect(daemon: Api, status: int, method: str, path: str, **kwargs: object) -> dict[str, object]:
    got, content_type, body = await daemon.call(method, path, **kwargs)  # type: ignore[arg-type]
    assert (got, content_type) == (status, PROBLEM), body
    assert isinstance(body, dict) and body["status"] == status
    return body


@pytest.mark.parametrize("run", ["9" * 26, str(2**63), "-" + "9" * 26])
async def test_a_run_id_beyond_sqlite_integers_is_not_found(daemon: Api, run: str) -> None:
    await expect(daemon, 404, "GET", f"/api/v1/runs/{run}", token=VIEWER)
    await expect(daemon, 404, "POST", f"/api/v1/runs/{run}/approve", body={})


@pytest.mark.parametrize("query", ["since=100000000000000000000000", "since=-100000000000000000000000",
                                   "limit=100000000000000000000000", "tail=100000000000000000000000",
                                   "since=1e23"])
async def test_event_cursors_beyond_sqlite_integers_are_refused(daemon: Api, query: str) -> None:
    problem = await expect(daemon, 400, "GET", f"/api/v1/events?{query}", token=VIEWER)
    assert query.partition("=")[0] in str(problem["detail"])


async def test_a_run_limit_beyond_sqlite_integers_is_refused(daemon: Api) -> None:
    await expect(daemon, 400, "GET", "/api/v1/runs?limit=100000000000000000000000", token=VIEWER)


async def test_a_deeply_nested_body_is_refused(daemon: Api) -> None:
    deep = b"[" * 30_000 + b"]" * 30_000
    problem = await expect(daemon, 400, "POST", "/api/v1/services/payroll/ack", raw=deep)
    assert "nests too deep" in str(problem["detail"])
    deep_object = b'{"reason": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    await expect(daemon, 400, "POST", "/api/v1/services/payroll/failover", raw=deep_object)


@pytest.mark.parametrize(("duration", "why"), [("99999999999999999d", "at most"), ("0.0000001ms", "at least"),
                                               ("0s", "at least"), ("367d", "at most")])
async def test_maintenance_durations_out_of_range_are_refused(daemon: Api, duration: str, why: str) -> None:
    problem = await expect(daemon, 400, "POST", "/api/v1/services/payroll/maintenance",
                           body={"duration": duration, "reason": "works"})
    assert why in str(problem), problem


@pytest.mark.parametrize("body", [{"reason": "x", "force": "yes"}, {"reason": "x", "dry_run": 1},
                                  {"reason": "x", "force": "true"}, {"reason": "x", "to": 5}])
async def test_wrong_types_in_a_body_are_refused(daemon: Api, body: dict[str, object]) -> None:
    problem = await expect(daemon, 400, "POST", "/api/v1/services/payroll/failover", body=body)
    fields = [error["field"] for error in problem["errors"]]  # type: ignore[attr-defined]
    assert set(fields) & {"force", "dry_run", "to"}
    _, _, runs = await daemon.call("GET", "/api/v1/runs", token=VIEWER)
    assert runs["runs"] == []  # nothing started
