"""Operator endpoints: failover, failback, acknowledge, runs, approve, abort."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from bcd.durations import DURATION_PATTERN, MAINTENANCE, parse_between
from bcd.engine import Engine, RequestRefused
from bcd.journal import JournalWriteError
from bcd.model import RunKind
from bcd.policy import Request
from bcd.web.auth import Caller, Denied, Role, require
from bcd.web.context import CONTEXT
from bcd.web.inputs import Body, body_of, clamped
from bcd.web.inputs import run_id as path_run_id
from bcd.web.problems import Problem, problem


class TransferBody(Body):
    to: str | None = None
    reason: str = Field(min_length=1, max_length=500)
    dry_run: bool = False
    force: bool = False


class MaintenanceBody(Body):
    site: str | None = None
    duration: str = Field(description="1s to 366d, e.g. 30m, 2h", pattern=DURATION_PATTERN)
    reason: str = Field(min_length=1, max_length=500)


class ReasonBody(Body):
    reason: str = Field("", max_length=500)


def routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/services/{service}/failover", failover)
    app.router.add_post("/api/v1/services/{service}/failback", failback)
    app.router.add_post("/api/v1/services/{service}/ack", acknowledge)
    app.router.add_post("/api/v1/services/{service}/maintenance", start_maintenance)
    app.router.add_delete("/api/v1/services/{service}/maintenance", end_maintenance)
    app.router.add_get("/api/v1/runs", list_runs)
    app.router.add_get("/api/v1/runs/{run}", get_run)
    app.router.add_post("/api/v1/runs/{run}/approve", approve)
    app.router.add_post("/api/v1/runs/{run}/abort", abort)


def _engine(request: web.Request) -> Engine:
    return request.app[CONTEXT].engine()


def caller(request: web.Request, role: Role) -> Caller:
    """The authenticated caller, or a Problem (401/403) to return."""
    try:
        return require(_engine(request).config.auth, request, role)
    except Denied as exc:
        raise Problem(problem(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden", str(exc))) from None


def _service(request: web.Request) -> str:
    name = request.match_info["service"]
    if name not in _engine(request).services:
        raise Problem(problem(404, "Not Found", f"no service named {name!r}"))
    return name


def handler(func: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await func(request)
            return response
        except Problem as exc:
            return exc.response
        except JournalWriteError as exc:  # nothing that needs the journal happens without it: try again later
            response = problem(503, "Service Unavailable", str(exc))
            response.headers["Retry-After"] = "10"
            return response

    return wrapped


async def _transfer(request: web.Request, kind: RunKind) -> web.Response:
    who = caller(request, Role.OPERATOR)
    name = _service(request)
    body = await body_of(request, TransferBody)
    engine = _engine(request)
    try:
        run = await engine.submit(name, Request(kind, body.to, body.force, body.dry_run), who.name, body.reason)
    except RequestRefused as exc:
        verdict = exc.verdict
        return problem(409, "Conflict", str(exc), guard=verdict.guard and str(verdict.guard))
    record = engine.runs.get(run.id)
    assert record is not None
    return web.json_response(record.to_dict(), status=202)


@handler
async def failover(request: web.Request) -> web.Response:
    return await _transfer(request, RunKind.FAILOVER)


@handler
async def failback(request: web.Request) -> web.Response:
    return await _transfer(request, RunKind.FAILBACK)


@handler
async def acknowledge(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    name = _service(request)
    body = await body_of(request, ReasonBody)
    ids = _engine(request).acknowledge(name, who.name, body.reason or "acknowledged")
    return web.json_response({"service": name, "acknowledged": ids})


@handler
async def start_maintenance(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    name = _service(request)
    body = await body_of(request, MaintenanceBody)
    try:
        seconds = parse_between(body.duration, *MAINTENANCE)
    except ValueError as exc:
        return problem(400, "Bad Request", f"duration: {exc}")
    engine = _engine(request)
    try:
        sites = engine.start_maintenance(name, body.site, seconds, body.reason, who.name)
    except KeyError as exc:
        return problem(404, "Not Found", str(exc.args[0]))
    until = max((engine.sites[(name, s)].maintenance_until or 0.0) for s in sites)
    return web.json_response({"service": name, "sites": sites, "until": until, "by": who.name}, status=201)


@handler
async def end_maintenance(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    name = _service(request)
    try:
        sites = _engine(request).end_maintenance(name, request.query.get("site"), who.name)
    except KeyError as exc:
        return problem(404, "Not Found", str(exc.args[0]))
    return web.json_response({"service": name, "ended": sites, "by": who.name})


@handler
async def list_runs(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    service = request.query.get("service")
    limit = clamped(request, "limit", 50, 500)
    runs = _engine(request).runs.recent(service, limit)
    return web.json_response({"runs": [run.to_dict() for run in runs]})


@handler
async def get_run(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    engine = _engine(request)
    run_id = path_run_id(request)
    record = engine.runs.get(run_id)
    if record is None:
        return problem(404, "Not Found", f"no run {run_id}")
    active = engine.runner.find(run_id) if engine.runner is not None else None
    data = record.to_dict()
    data["steps"] = [step.to_dict() for step in engine.runs.steps(run_id)]
    data["waiting_approval"] = bool(active and active.approval is not None)
    return web.json_response(data)


@handler
async def approve(request: web.Request) -> web.Response:
    return await _control(request, "approve")


@handler
async def abort(request: web.Request) -> web.Response:
    return await _control(request, "abort")


async def _control(request: web.Request, action: str) -> web.Response:
    who = caller(request, Role.OPERATOR)
    engine = _engine(request)
    run_id = path_run_id(request)
    await body_of(request, ReasonBody)
    if engine.runs.get(run_id) is None:
        return problem(404, "Not Found", f"no run {run_id}")
    assert engine.runner is not None
    runner = engine.runner
    if action == "approve":
        engine.writable()  # the approved step could not be journaled: refused now rather than failed later
    done = runner.approve(run_id, who.name) if action == "approve" else runner.abort(run_id, who.name)
    if not done:
        what = "waiting for approval" if action == "approve" else "in progress"
        return problem(409, "Conflict", f"run {run_id} is not {what}")
    return web.json_response({"run": run_id, "action": action, "by": who.name}, status=202)
