"""`POST /api/v1/services/{service}/drill`: start a DR drill (bcd.drills) through `bcd.operations` (an operator's,
within the token's scope, like a failover); `POST /api/v1/plans/{plan}/drill`: drill a recovery plan (an
operator's, never a scoped token's, like a plan run); 202 with the drill, 409 with the reason when it is refused."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from bcd.authority import Action
from bcd.config.drills import MAX_HOLD
from bcd.durations import DURATION_PATTERN, format_duration, parse_between
from bcd.operations import Drill, DrillPlan, Refused
from bcd.web.context import CONTEXT
from bcd.web.inputs import Body, body_of
from bcd.web.operations import actor, handler, refused
from bcd.web.problems import problem


class DrillBody(Body):
    reason: str = Field(min_length=1, max_length=500)
    kind: Literal["round_trip", "runbook"] = Field(
        "round_trip", description="round_trip: a real failover, hold, fail back; runbook: the drill_runbook, cleanup")
    hold: str = Field("0s", description=f"round_trip: time on the standby, 0s to {format_duration(MAX_HOLD)}",
                      pattern=DURATION_PATTERN)


class PlanDrillBody(Body):
    reason: str = Field(min_length=1, max_length=500)
    hold: str = Field("0s", description=f"time on the plan's `to` site, 0s to {format_duration(MAX_HOLD)}",
                      pattern=DURATION_PATTERN)


DRILL_SCHEMA = {
    "type": "object", "required": ["id", "service", "kind", "hold", "from", "to", "by", "started", "runs", "detail"],
    "properties": {"id": {"type": "string"}, "service": {"type": "string"}, "kind": {"enum": ["round_trip", "runbook"]},
                   "hold": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"},
                   "by": {"type": "string"}, "reason": {"type": "string"}, "name": {"type": ["string", "null"]},
                   "started": {"type": "number"}, "runs": {"type": "array", "items": {"type": "integer"}},
                   "detail": {"type": "string"}},
}

PLAN_DRILL_SCHEMA = {
    "type": "object", "required": ["id", "plan", "kind", "hold", "from", "to", "by", "started", "plan_run", "runs",
                                   "detail"],
    "properties": {"id": {"type": "string"}, "plan": {"type": "string"}, "kind": {"const": "plan"},
                   "hold": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"},
                   "by": {"type": "string"}, "reason": {"type": "string"}, "started": {"type": "number"},
                   "plan_run": {"type": "integer"}, "runs": {"type": "array", "items": {"type": "integer"}},
                   "detail": {"type": "string"}},
}


def routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/services/{service}/drill", drill)
    app.router.add_post("/api/v1/plans/{plan}/drill", drill_plan)


@handler
async def drill(request: web.Request) -> web.Response:
    who = actor(request, Action.TRANSFER)
    operations = request.app[CONTEXT].operations
    name = request.match_info["service"]
    unknown = operations.unknown_service(name)
    if unknown is not None:
        return refused(unknown)
    body = await body_of(request, DrillBody)
    try:
        hold = parse_between(body.hold, 0.0, MAX_HOLD)
    except ValueError as exc:
        return problem(400, "Bad Request", f"hold: {exc}")
    done = await operations.perform(Drill(name, who.name, body.reason, body.kind, hold), who)
    if isinstance(done, Refused):
        return refused(done, guard=done.guard and str(done.guard))
    return web.json_response({**(done.drill or {}), "detail": done.detail}, status=202)


@handler
async def drill_plan(request: web.Request) -> web.Response:
    who = actor(request, Action.TRANSFER)
    body = await body_of(request, PlanDrillBody)
    try:
        hold = parse_between(body.hold, 0.0, MAX_HOLD)
    except ValueError as exc:
        return problem(400, "Bad Request", f"hold: {exc}")
    done = await request.app[CONTEXT].operations.perform(DrillPlan(request.match_info["plan"], who.name, body.reason,
                                                                   hold), who)
    if isinstance(done, Refused):
        return refused(done, guard=done.guard and str(done.guard))
    return web.json_response({**(done.drill or {}), "detail": done.detail}, status=202)
