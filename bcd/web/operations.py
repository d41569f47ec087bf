"""Operator endpoints: failover, failback, acknowledge, runs, approve, abort, reload."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from bcd.authority import Action, Actor
from bcd.calendar import when
from bcd.durations import DURATION_PATTERN, MAINTENANCE, parse_between
from bcd.journal import JournalWriteError
from bcd.model import RunKind
from bcd.operations import (
    Abort,
    Accepted,
    Acknowledge,
    Approve,
    BookMaintenance,
    EndMaintenance,
    Intent,
    Refusal,
    Refused,
    Reload,
    StartMaintenance,
    Transfer,
)
from bcd.web.auth import Denied, Role, authenticate, require
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
    start: str | None = Field(None, alias="from", description="book a window starting then (ISO 8601; no offset: "
                                                              "UTC) instead of now")
    force: bool = Field(False, description="book a window leaving the service no site outside maintenance")


class ReasonBody(Body):
    reason: str = Field("", max_length=500)


def routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/services/{service}/failover", failover)
    app.router.add_post("/api/v1/services/{service}/failback", failback)
    app.router.add_post("/api/v1/services/{service}/ack", acknowledge)
    app.router.add_post("/api/v1/services/{service}/maintenance", start_maintenance)
    app.router.add_delete("/api/v1/services/{service}/maintenance", end_maintenance)
    app.router.add_get("/api/v1/maintenance", list_maintenance)
    app.router.add_get("/api/v1/runs", list_runs)
    app.router.add_get("/api/v1/runs/{run}", get_run)
    app.router.add_post("/api/v1/runs/{run}/approve", approve)
    app.router.add_post("/api/v1/runs/{run}/abort", abort)
    app.router.add_get("/api/v1/whoami", whoami)
    app.router.add_post("/api/v1/reload", reload_config)


def caller(request: web.Request, role: Role = Role.VIEWER) -> Actor:
    """The caller, if it may read; else a Problem (401) to return."""
    try:
        return require(request.app[CONTEXT].view.config.auth, request, role)
    except Denied as exc:
        raise Problem(problem(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden", str(exc))) from None


def actor(request: web.Request, action: Action) -> Actor:
    """Who asks for `action`, known by its token; a Problem (401, or 403 when its role may never do it: decided
    by `bcd.operations`) to return before the body is read."""
    try:
        who = authenticate(request.app[CONTEXT].view.config.auth, request)
    except Denied as exc:
        raise Problem(problem(exc.status, "Unauthorized" if exc.status == 401 else "Forbidden", str(exc))) from None
    forbidden = request.app[CONTEXT].operations.permitted(who, action)
    if forbidden is not None:
        raise Problem(refused(forbidden))
    return who


def _service(request: web.Request) -> str:
    """The service of the path; an unknown one is refused (404) before the body is read."""
    name = request.match_info["service"]
    unknown = request.app[CONTEXT].operations.unknown_service(name)
    if unknown is not None:
        raise Problem(refused(unknown))
    return name


def handler(func: Any) -> Any:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await func(request)
            return response
        except Problem as exc:
            return exc.response
        except JournalWriteError as exc:  # nothing that needs the journal happens without it: try again later
            return unavailable(str(exc))

    return wrapped


def unavailable(detail: str) -> web.Response:
    response = problem(503, "Service Unavailable", detail)
    response.headers["Retry-After"] = "10"
    return response


def refused(outcome: Refused, **extra: object) -> web.Response:
    """A refusal of `bcd.operations` as its problem: 403 forbidden, 404 unknown, 409 conflict, 422 invalid (with
    its `problems`), 503 unavailable."""
    if outcome.kind is Refusal.NOT_FOUND:
        return problem(404, "Not Found", outcome.reason)
    if outcome.kind is Refusal.FORBIDDEN:
        return problem(403, "Forbidden", outcome.reason)
    if outcome.kind is Refusal.CONFLICT:
        return problem(409, "Conflict", outcome.reason, **extra)
    if outcome.kind is Refusal.INVALID:
        return problem(422, "Unprocessable Content", outcome.reason, problems=list(outcome.problems))
    return unavailable(outcome.reason)


async def _perform(request: web.Request, intent: Intent, who: Actor) -> Accepted | web.Response:
    """The accepted outcome, or the refusal's problem to return."""
    outcome = await request.app[CONTEXT].operations.perform(intent, who)
    if isinstance(outcome, Refused):
        guard = {"guard": outcome.guard and str(outcome.guard)} if isinstance(intent, Transfer) else {}
        return refused(outcome, **guard)
    return outcome


async def _transfer(request: web.Request, kind: RunKind) -> web.Response:
    who = actor(request, Action.TRANSFER)
    name = _service(request)
    body = await body_of(request, TransferBody)
    done = await _perform(request, Transfer(name, kind, who.name, body.reason, body.to, body.force, body.dry_run), who)
    if isinstance(done, web.Response):
        return done
    assert done.run is not None
    return web.json_response(done.run.to_dict(), status=202)


@handler
async def failover(request: web.Request) -> web.Response:
    return await _transfer(request, RunKind.FAILOVER)


@handler
async def failback(request: web.Request) -> web.Response:
    return await _transfer(request, RunKind.FAILBACK)


@handler
async def acknowledge(request: web.Request) -> web.Response:
    who = actor(request, Action.ACKNOWLEDGE)
    name = _service(request)
    body = await body_of(request, ReasonBody)
    done = await _perform(request, Acknowledge(name, who.name, body.reason or "acknowledged"), who)
    if isinstance(done, web.Response):
        return done
    return web.json_response({"service": name, "acknowledged": done.runs})


@handler
async def start_maintenance(request: web.Request) -> web.Response:
    who = actor(request, Action.MAINTENANCE)
    name = _service(request)
    body = await body_of(request, MaintenanceBody)
    try:
        seconds = parse_between(body.duration, *MAINTENANCE)
    except ValueError as exc:
        return problem(400, "Bad Request", f"duration: {exc}")
    if body.start is not None:
        try:
            start = when(body.start)
        except ValueError as exc:
            return problem(400, "Bad Request", f"from: {exc}")
        intent: Intent = BookMaintenance(name, body.site, start, seconds, who.name, body.reason, body.force)
    else:
        intent = StartMaintenance(name, body.site, seconds, who.name, body.reason)
    done = await _perform(request, intent, who)
    if isinstance(done, web.Response):
        return done
    return web.json_response({"service": name, "sites": done.sites, "until": done.until, "by": who.name,
                              "detail": done.detail}, status=201)


@handler
async def end_maintenance(request: web.Request) -> web.Response:
    who = actor(request, Action.MAINTENANCE)
    name = _service(request)
    done = await _perform(request, EndMaintenance(name, request.query.get("site"), who.name), who)
    if isinstance(done, web.Response):
        return done
    return web.json_response({"service": name, "ended": done.sites, "by": who.name, "detail": done.detail})


@handler
async def list_maintenance(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    return web.json_response({"windows": request.app[CONTEXT].operations.maintenance_windows()})


@handler
async def list_runs(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    service = request.query.get("service")
    limit = clamped(request, "limit", 50, 500)
    runs = request.app[CONTEXT].view.recent_runs(service, limit)
    return web.json_response({"runs": [run.to_dict() for run in runs]})


@handler
async def get_run(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    estate = request.app[CONTEXT].view
    run_id = path_run_id(request)
    record = estate.run(run_id)
    if record is None:
        return problem(404, "Not Found", f"no run {run_id}")
    data = record.to_dict()
    data["steps"] = [step.to_dict() for step in estate.run_steps(run_id)]
    data["waiting_approval"] = estate.waiting_approval(run_id)
    return web.json_response(data)


@handler
async def approve(request: web.Request) -> web.Response:
    return await _control(request, "approve")


@handler
async def abort(request: web.Request) -> web.Response:
    return await _control(request, "abort")


async def _control(request: web.Request, action: str) -> web.Response:
    who = actor(request, Action.APPROVE if action == "approve" else Action.ABORT)
    run_id = path_run_id(request)
    body = await body_of(request, ReasonBody)
    control = Approve if action == "approve" else Abort
    done = await _perform(request, control(run_id, who.name, reason=body.reason), who)
    if isinstance(done, web.Response):
        return done
    return web.json_response({"run": run_id, "action": action, "by": who.name}, status=202)


@handler
async def whoami(request: web.Request) -> web.Response:
    """Who the token is, the actions its role allows and the services its scope covers (as `bcd.operations`
    decides them): the status page shows only the buttons the token may use."""
    who = caller(request)
    operations = request.app[CONTEXT].operations
    actions = [action.name.lower() for action in Action if operations.permitted(who, action) is None]
    services = [name for name in request.app[CONTEXT].view.config.services
                if operations.out_of_scope(who, name) is None]
    scope = None if who.scope is None else who.scope.labels
    return web.json_response({"name": who.name, "role": who.role.word, "scope": scope, "actions": actions,
                              "services": services})


@handler
async def reload_config(request: web.Request) -> web.Response:
    """Load the config file again, as a SIGHUP does, journaled `by: "api: <token>"` (operator, unscoped): 200 once
    reloaded; 422 with its `problems` (`FILE:LINE: path: message`) when it cannot be loaded: nothing changed."""
    who = actor(request, Action.RELOAD)
    await body_of(request, Body)  # nothing to say: an empty body or {}
    by = f"api: {who.name}"
    done = await _perform(request, Reload(by), who)
    if isinstance(done, web.Response):
        return done
    return web.json_response({"reloaded": True, "by": by, "detail": done.detail})
