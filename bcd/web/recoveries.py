"""`GET /api/v1/services/{service}/recoveries`: the service's recoveries, their timelines and phases."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bcd.model import RunResult
from bcd.recoveries import PHASES, RecoveryKind
from bcd.view import objectives_json
from bcd.web.auth import Role
from bcd.web.context import CONTEXT
from bcd.web.inputs import clamped
from bcd.web.operations import caller, handler
from bcd.web.problems import problem


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/services/{service}/recoveries", list_recoveries)


@handler
async def list_recoveries(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    estate = request.app[CONTEXT].view
    name = request.match_info["service"]
    if name not in estate.services:
        return problem(404, "Not Found", f"no service named {name!r}")
    limit = clamped(request, "limit", 50, 500)
    return web.json_response({
        "service": name, "objectives": objectives_json(estate.config, name),
        "recoveries": [recovery.to_json() for recovery in estate.recoveries(name, limit)],
    })


SECONDS = {"type": ["number", "null"]}
RECOVERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["run_id", "service", "kind", "trigger", "plan", "from", "to", "result", "timeline", "phases",
                 "total", "rto", "rto_met"],
    "properties": {
        "run_id": {"type": "integer"}, "service": {"type": "string"},
        "kind": {"enum": [str(kind) for kind in RecoveryKind]}, "trigger": {"type": "string"},
        "plan": {"type": ["string", "null"], "description": "the recovery plan that made it; null: none"},
        "from": {"type": "string"}, "to": {"type": "string"}, "result": {"enum": [str(result) for result in RunResult]},
        "timeline": {"type": "object", "description": "epoch seconds: the first failing observation of the site "
                     "left, the decision (that site confirmed down, else the run's start), the run's start, the "
                     "end of execution, the target verified; null where not known (yet)",
                     "properties": {point: SECONDS for point in ("failing", "decided", "started", "executed",
                                                                 "verified")}},
        "phases": {"type": "object", "description": "seconds of each phase; they add up to total",
                   "properties": {phase: SECONDS for phase in PHASES}},
        "total": {**SECONDS, "description": "first failing observation (else the decision) to target verified"},
        "rto": SECONDS, "rto_met": {"type": ["boolean", "null"], "description": "null: no RTO, or not verified"},
    },
}
