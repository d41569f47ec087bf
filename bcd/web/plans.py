"""Recovery plan endpoints: list and show plans, run one (or its dry run), and act on a plan run — resume,
abort, approve its gate, mark a service done. Reads go through the estate view, actions through operations."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from bcd.authority import Actor
from bcd.config.plans import PlanConfig, plan_json
from bcd.operations import (
    AbortPlan,
    Accepted,
    ApproveGate,
    Intent,
    PlanDone,
    Refusal,
    Refused,
    ResumePlan,
    RunPlan,
)
from bcd.web.auth import Role
from bcd.web.context import CONTEXT
from bcd.web.inputs import Body, body_of, clamped
from bcd.web.inputs import run_id as path_run_id
from bcd.web.operations import caller, handler, refused
from bcd.web.problems import problem


class PlanRunBody(Body):
    reason: str = Field(min_length=1, max_length=500)
    dry_run: bool = False
    force: bool = Field(False, description="each move bypasses the standby-health and cooldown guards (journaled)")


class PlanAbortBody(Body):
    now: bool = Field(False, description="abort the moves in progress too (their rollback runs)")


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/plans", list_plans)
    app.router.add_get("/api/v1/plans/{plan}", get_plan)
    app.router.add_post("/api/v1/plans/{plan}/run", run_plan)
    app.router.add_get("/api/v1/plan-runs", list_plan_runs)
    app.router.add_get("/api/v1/plan-runs/{run}", get_plan_run)
    app.router.add_post("/api/v1/plan-runs/{run}/resume", resume)
    app.router.add_post("/api/v1/plan-runs/{run}/abort", abort)
    app.router.add_post("/api/v1/plan-runs/{run}/approve", approve)
    app.router.add_post("/api/v1/plan-runs/{run}/services/{service}/done", done)


def _plan(request: web.Request) -> tuple[str, PlanConfig] | web.Response:
    name = request.match_info["plan"]
    config = request.app[CONTEXT].view.config.plans.get(name)
    if config is None:
        return problem(404, "Not Found", f"no plan named {name!r}")
    return name, config


def _summary(request: web.Request, name: str, config: PlanConfig) -> dict[str, Any]:
    last = request.app[CONTEXT].view.plan_runs(name, 1)
    return {"name": name, **plan_json(config), "last_run": last[0].to_json() if last else None}


@handler
async def list_plans(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    plans = request.app[CONTEXT].view.config.plans
    return web.json_response({"plans": [_summary(request, name, config) for name, config in plans.items()]})


@handler
async def get_plan(request: web.Request) -> web.Response:
    """The plan, what a run would do now (the dry run: groups, skips, critical path) and its recent runs."""
    who = caller(request, Role.VIEWER)
    found = _plan(request)
    if isinstance(found, web.Response):
        return found
    name, config = found
    outcome = await request.app[CONTEXT].operations.perform(RunPlan(name, who.name, "show", dry_run=True))
    runs = [run.to_json() for run in request.app[CONTEXT].view.plan_runs(name, 10)]
    order = outcome.detail if isinstance(outcome, Accepted) else outcome.reason
    return web.json_response({**_summary(request, name, config), "order": order, "runs": runs})


async def _perform(request: web.Request, intent: Intent, who: Actor, status: int = 200) -> web.Response:
    outcome = await request.app[CONTEXT].operations.perform(intent, who)
    if isinstance(outcome, Refused):
        return refused(outcome)
    data: dict[str, Any] = {"detail": outcome.detail}
    if outcome.plan_run is not None:
        data["plan_run"] = outcome.plan_run.to_json()
    return web.json_response(data, status=status)


@handler
async def run_plan(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    found = _plan(request)
    if isinstance(found, web.Response):
        return found
    body = await body_of(request, PlanRunBody)
    intent = RunPlan(found[0], who.name, body.reason, body.force, body.dry_run)
    return await _perform(request, intent, who, 200 if body.dry_run else 202)


@handler
async def list_plan_runs(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    runs = request.app[CONTEXT].view.plan_runs(request.query.get("plan"), clamped(request, "limit", 50, 500))
    return web.json_response({"plan_runs": [run.to_json() for run in runs]})


@handler
async def get_plan_run(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    number = path_run_id(request)
    run = request.app[CONTEXT].view.plan_run(number)
    if run is None:
        return refused(Refused(Refusal.NOT_FOUND, f"no plan run {number}"))
    return web.json_response(run.to_json())


@handler
async def resume(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    return await _perform(request, ResumePlan(path_run_id(request), who.name), who, 202)


@handler
async def abort(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    number = path_run_id(request)
    body = await body_of(request, PlanAbortBody)
    return await _perform(request, AbortPlan(number, who.name, body.now), who, 202)


@handler
async def approve(request: web.Request) -> web.Response:
    who = caller(request, Role.APPROVER)
    return await _perform(request, ApproveGate(path_run_id(request), who.name), who, 202)


@handler
async def done(request: web.Request) -> web.Response:
    who = caller(request, Role.OPERATOR)
    number = path_run_id(request)
    return await _perform(request, PlanDone(number, request.match_info["service"], who.name), who)
