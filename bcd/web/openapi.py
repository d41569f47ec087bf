"""The OpenAPI 3.1 description of the HTTP API, served at /api/v1/openapi.json.

Request bodies come from the same pydantic models the handlers validate with, so the document cannot
drift from what the server accepts; a test checks every route is described and responses match.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bcd import __version__
from bcd.model import RunResult, ServiceStatus, SiteState
from bcd.plans.model import MoveState, PlanState
from bcd.web import bookings
from bcd.web.drills import DRILL_SCHEMA, PLAN_DRILL_SCHEMA, DrillBody, PlanDrillBody
from bcd.web.inputs import INT64, Body
from bcd.web.operations import MaintenanceBody, ReasonBody, TransferBody
from bcd.web.plans import PlanAbortBody, PlanRunBody
from bcd.web.recoveries import RECOVERY_SCHEMA
from bcd.web.reports import REPORT_PARAMS, REPORT_RESPONSES

PROBLEM = {"$ref": "#/components/responses/Problem"}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
STRING = {"schema": {"type": "string"}}


def _json(schema: dict[str, Any], description: str = "OK", links: dict[str, Any] | None = None) -> dict[str, Any]:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {**response, "links": links} if links else response


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(model: Any) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}


def _op(name: str, summary: str, responses: dict[str, Any], *, body: Any = None, params: list[Any] | None = None,
        operator: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": name, "summary": summary, "responses": {**responses, "4XX": PROBLEM},
                          "security": BEARER}
    if body is not None:
        op["requestBody"] = _body(body)
    if params:
        op["parameters"] = params
    if operator:
        op["description"] = "Needs an operator token (approve, abort: an approver's will do)."
        op["responses"]["503"] = PROBLEM  # the journal cannot be written: refused, try again later
    return op


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path", "schema": schema}


INTEGER = {"type": "integer", "minimum": INT64[0], "maximum": INT64[1]}  # beyond: 400 (a run id: 404)
PAGE = {**INTEGER, "description": "clamped to 1..500"}
SERVICE = _param("service", "path", {"type": "string"})
RUN = _param("run", "path", INTEGER)
# a run a call started can be followed, approved or aborted (also what schemathesis's stateful phase walks)
RUN_LINKS = {name: {"operationId": name, "parameters": {"run": "$response.body#/id"}}
             for name in ("getRun", "approveRun", "abortRun")}
WINDOW = {"type": "object", "required": ["name", "active", "services", "sites", "start", "end", "reason", "source"],
          "properties": {"name": {"type": "string"}, "active": {"type": "boolean"},
                         "services": {"type": "array", "items": {"type": "string"}},
                         "sites": {"type": "array", "items": {"type": "string"}},
                         "start": {"type": "number"}, "end": {"type": "number"}, "reason": {"type": "string"},
                         "by": {"type": "string"}, "source": {"enum": ["config", "booked"]},
                         "every": {"type": ["string", "null"]}, "force": {"type": "boolean"},
                         "booking": {"type": ["string", "null"], "description": "a booked window's booking id"}}}
SITE_HEALTH = {
    "type": "object",
    "required": ["state", "since", "reason", "probes"],
    "properties": {
        "state": {"enum": [str(s) for s in SiteState]}, "since": {"type": "number"}, "reason": {"type": "string"},
        "maintenance_until": {"type": ["number", "null"]},
        "impacted_by": {"type": ["string", "null"], "description": "the dependencies down at this site that "
                        "explain its being down (comma-separated); its alert is not sent"},
        "probes": {"type": "object", "additionalProperties": {"type": "object"}},
    },
}
OBJECTIVES = {"type": "object", "description": "the effective recovery objectives in seconds (the service's, "
              "else those under defaults:); null: none",
              "properties": {"rto": {"type": ["number", "null"]}, "rpo": {"type": ["number", "null"]}}}
SERVICE_SCHEMA = {
    "type": "object",
    "required": ["name", "status", "active", "home", "since", "reason", "sites", "labels"],
    "properties": {
        "name": {"type": "string"}, "description": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "status": {"enum": [str(s) for s in ServiceStatus]}, "active": {"type": "string"}, "home": {"type": "string"},
        "since": {"type": "number"}, "reason": {"type": "string"}, "guard": {"type": ["string", "null"]},
        "depends_on": {"type": "array", "items": {"type": "string"}, "description": "the services it needs"},
        "sites": {"type": "object", "additionalProperties": SITE_HEALTH},
        "objectives": OBJECTIVES,
        "views": {"type": "object", "description": "cluster members only: every live vantage's view of the "
                  "service's sites ({vantage: {age, stale, lease_ttl, executor, sites: {site: {state, since, "
                  "reason}}}}); age: seconds since this instance received it; stale: age is more than lease_ttl; "
                  "executor false: a witness, which votes and never runs a runbook)",
                  "additionalProperties": {"type": "object"}},
        "lock": {"type": ["object", "null"], "description": "cluster members only: who holds the run lock",
                 "properties": {"holder": {"type": "string"}, "held_here": {"type": "boolean"}}},
        "coordination": {"enum": ["up", "down"], "description": "cluster members only: etcd and our lease"},
        "executor": {"type": "boolean", "description": "cluster members only: whether this instance takes locks and "
                     "runs runbooks (false: a witness, cluster.executor: false)"},
    },
}
RUN_SCHEMA = {
    "type": "object",
    "required": ["id", "service", "runbook", "kind", "trigger", "from", "to", "result", "started"],
    "properties": {
        "id": {"type": "integer"}, "service": {"type": "string"}, "runbook": {"type": "string"},
        "kind": {"enum": ["failover", "failback"]}, "trigger": {"type": "string"}, "reason": {"type": "string"},
        "from": {"type": "string"}, "to": {"type": "string"}, "dry_run": {"type": "boolean"},
        "forced": {"type": "boolean"}, "evidence": {"type": "object"}, "started": {"type": "number"},
        "ended": {"type": ["number", "null"]}, "result": {"enum": [str(r) for r in RunResult]},
        "detail": {"type": "string"}, "acknowledged_by": {"type": ["string", "null"]},
        "detected_at": {"type": ["number", "null"]}, "verified_at": {"type": ["number", "null"]},
        "steps": {"type": "array", "items": {"type": "object"}}, "waiting_approval": {"type": "boolean"},
    },
}
PLAN = _param("plan", "path", {"type": "string"})
PLAN_RUN_SCHEMA = {
    "type": "object",
    "required": ["id", "plan", "from", "to", "state", "started", "groups", "services", "gates"],
    "properties": {
        "id": {"type": "integer"}, "plan": {"type": "string"}, "from": {"type": "string"}, "to": {"type": "string"},
        "by": {"type": "string"}, "reason": {"type": "string"}, "forced": {"type": "boolean"},
        "state": {"enum": [str(s) for s in PlanState]}, "started": {"type": "number"},
        "ended": {"type": ["number", "null"]}, "detail": {"type": "string"},
        "objective": {"type": ["number", "null"]},
        "groups": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "services": {"type": "array", "items": {"type": "object", "properties": {
            "service": {"type": "string"}, "group": {"type": "integer"}, "state": {"enum": [str(s) for s in MoveState]},
            "reason": {"type": "string"}, "run_id": {"type": ["integer", "null"]},
            "started": {"type": ["number", "null"]}, "ended": {"type": ["number", "null"]},
            "run_name": {"type": ["string", "null"], "description": "in a cluster: <vantage>:<run id>"}}}},
        "gates": {"type": "array", "items": {"type": "object"}},
        "holder": {"type": ["string", "null"], "description": "in a cluster: the vantage that last ran it"},
        "token": {"type": ["integer", "null"], "description": "in a cluster: the plan lock's token it ran under"},
        "seq": {"type": "integer", "description": "changes written under that token"},
        "events": {"type": "array", "items": {"type": "string"}},
    },
}
PLAN_OUTCOME = _json({"type": "object", "required": ["detail"], "properties": {
    "detail": {"type": "string"}, "plan_run": _ref("PlanRun")}})


def _plan_paths() -> dict[str, Any]:
    runs = {"type": "object", "required": ["plan_runs"],
            "properties": {"plan_runs": {"type": "array", "items": _ref("PlanRun")}}}
    return {
        "/api/v1/plans": {"get": _op("listPlans", "Every recovery plan with its last run", {"200": _json({
            "type": "object", "required": ["plans"], "properties": {"plans": {"type": "array"}}})})},
        "/api/v1/plans/{plan}": {"get": _op("getPlan", "A plan, the order a run would take now (dry run) and its "
                                            "recent runs", {"200": _json({"type": "object"})}, params=[PLAN])},
        "/api/v1/plans/{plan}/run": {"post": _op(
            "runPlan", "Start a run of the plan (202), or its dry run (200) (operator)",
            {"200": PLAN_OUTCOME, "202": PLAN_OUTCOME}, body=PlanRunBody, params=[PLAN], operator=True)},
        "/api/v1/plans/{plan}/drill": {"post": _op(
            "drillPlan", "Drill the plan: run it as a drill, hold, move each moved service back, dependents first "
            "(operator, not a scoped token); 409 with the reason when a precondition fails",
            {"202": _json(PLAN_DRILL_SCHEMA, "The drill started")}, body=PlanDrillBody, params=[PLAN], operator=True)},
        "/api/v1/plan-runs": {"get": _op("listPlanRuns", "Recent plan runs, newest first", {"200": _json(runs)},
                                         params=[_param("plan", "query", {"type": "string"}),
                                                 _param("limit", "query", PAGE)])},
        "/api/v1/plan-runs/{run}": {"get": _op("getPlanRun", "One plan run", {"200": _json(_ref("PlanRun"))},
                                               params=[RUN])},
        "/api/v1/plan-runs/{run}/resume": {"post": _op(
            "resumePlanRun", "Resume an interrupted plan run: the services not yet started (operator)",
            {"202": PLAN_OUTCOME}, params=[RUN], operator=True)},
        "/api/v1/plan-runs/{run}/abort": {"post": _op(
            "abortPlanRun", "Start no more moves; with now, abort the moves in progress too (operator)",
            {"202": PLAN_OUTCOME}, body=PlanAbortBody, params=[RUN], operator=True)},
        "/api/v1/plan-runs/{run}/approve": {"post": _op(
            "approvePlanGate", "Approve the gate a plan run waits at (operator)", {"202": PLAN_OUTCOME},
            params=[RUN], operator=True)},
        "/api/v1/plan-runs/{run}/services/{service}/done": {"post": _op(
            "planServiceDone", "Mark a manual or blocked service of a plan run done (operator)",
            {"200": PLAN_OUTCOME}, params=[RUN, SERVICE], operator=True)},
    }


EVENT_SCHEMA = {
    "type": "object",
    "required": ["id", "kind", "at", "service", "site", "reason"],
    "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string"}, "at": {"type": "number"},
        "service": {"type": ["string", "null"]}, "site": {"type": ["string", "null"]}, "reason": {"type": "string"},
    },
}


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": _json({"type": "object"})}}},
        "/readyz": {"get": {"summary": "Readiness: config loaded and every probe has run once", "security": [],
                            "responses": {"200": _json({"type": "object"}), "503": _json({"type": "object"},
                                                                                          "Not ready")}}},
        "/metrics": {"get": _op("metrics", "Prometheus metrics (a read: a token unless auth.anonymous_read)", {
            "200": {"description": "text exposition format", "content": {"text/plain": STRING}}})},
        "/api/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "security": [],
                                         "responses": {"200": _json({"type": "object"}), "4XX": PROBLEM}}},
        "/api/v1/whoami": {"get": _op("whoami", "The caller: name, role, scope, and what it may do where", {
            "200": _json({"type": "object", "required": ["name", "role", "actions", "services"]})})},
        "/api/v1/reload": {"post": {**_op(
            "reload", "Load the config file again, as a SIGHUP does (operator, any scope); 422 with its problems "
            "(FILE:LINE: path: message) when it cannot be loaded: nothing changed", {"200": _json({
                "type": "object", "required": ["reloaded", "by", "detail"], "properties": {
                    "reloaded": {"const": True}, "by": {"type": "string"}, "detail": {"type": "string"}}})},
            operator=True), "requestBody": {**_body(Body), "required": False}}},  # none, or {}
        "/api/v1/services": {"get": _op("listServices", "Every service with its sites", {"200": _json({
            "type": "object", "required": ["services"],
            "properties": {"services": {"type": "array", "items": _ref("Service")}}})})},
        "/api/v1/services/{service}": {"get": _op("getService", "One service", {"200": _json(_ref("Service"))},
                                                  params=[SERVICE])},
        "/api/v1/services/{service}/failover": {"post": _op(
            "failover", "Start a failover (operator)", {"202": _json(_ref("Run"), "The run started", RUN_LINKS)},
            body=TransferBody, params=[SERVICE], operator=True)},
        "/api/v1/services/{service}/failback": {"post": _op(
            "failback", "Start a failback to the home site (operator)",
            {"202": _json(_ref("Run"), "The run started", RUN_LINKS)},
            body=TransferBody, params=[SERVICE], operator=True)},
        "/api/v1/services/{service}/drill": {"post": _op(
            "drill", "Start a DR drill: to a standby and back, or the drill runbook (operator); 409 with the reason "
            "when a precondition fails", {"202": _json(DRILL_SCHEMA, "The drill started")}, body=DrillBody,
            params=[SERVICE], operator=True)},
        "/api/v1/services/{service}/ack": {"post": _op(
            "acknowledge", "Acknowledge failed or interrupted runs, re-arming automation (operator)",
            {"200": _json({"type": "object"})}, body=ReasonBody, params=[SERVICE], operator=True)},
        "/api/v1/services/{service}/maintenance": {
            "post": _op("startMaintenance", "Start maintenance of the service or one site, now or (with `from`) "
                        "as a window booked in the calendar (operator)",
                        {"201": _json({"type": "object"})}, body=MaintenanceBody, params=[SERVICE], operator=True),
            "delete": _op("endMaintenance", "End maintenance (operator)", {"200": _json({"type": "object"})},
                          params=[SERVICE, _param("site", "query", {"type": "string"})], operator=True),
        },
        "/api/v1/maintenance": {"get": _op(
            "listMaintenance", "Current and upcoming maintenance windows (config and booked), by start",
            {"200": _json({"type": "object", "required": ["windows"],
                           "properties": {"windows": {"type": "array", "items": WINDOW}}})})},
        "/api/v1/services/{service}/recoveries": {"get": _op(
            "listRecoveries", "The service's recoveries (failovers, failbacks, drills) with their timelines, "
            "newest first", {"200": _json({
                "type": "object", "required": ["service", "objectives", "recoveries"],
                "properties": {"service": {"type": "string"}, "objectives": OBJECTIVES,
                               "recoveries": {"type": "array", "items": _ref("Recovery")}}})},
            params=[SERVICE, _param("limit", "query", PAGE)])},
        "/api/v1/runs": {"get": _op("listRuns", "Recent runs, newest first", {"200": _json({
            "type": "object", "required": ["runs"], "properties": {"runs": {"type": "array", "items": _ref("Run")}}})},
            params=[_param("service", "query", {"type": "string"}), _param("limit", "query", PAGE)])},
        "/api/v1/runs/{run}": {"get": _op("getRun", "One run with its steps", {"200": _json(_ref("Run"))},
                                          params=[RUN])},
        "/api/v1/runs/{run}/approve": {"post": _op("approveRun", "Approve a run waiting in an approval step (approver)",
                                                   {"202": _json({"type": "object"})}, body=ReasonBody, params=[RUN],
                                                   operator=True)},
        "/api/v1/runs/{run}/abort": {"post": _op("abortRun", "Abort a run; its rollback runs (approver)",
                                                 {"202": _json({"type": "object"})}, body=ReasonBody, params=[RUN],
                                                 operator=True)},
        "/api/v1/events": {"get": _op("listEvents", "Journal events after a cursor, oldest first", {"200": _json({
            "type": "object", "required": ["events", "next"],
            "properties": {"events": {"type": "array", "items": _ref("Event")}, "next": {"type": "integer"}}})},
            params=[_param("since", "query", INTEGER), _param("limit", "query", PAGE), _param("tail", "query", PAGE),
                    _param("service", "query", {"type": "string"})])},
        "/api/v1/events/stream": {"get": _op(
            "streamEvents", "Live events as server-sent events (Last-Event-ID resumes)",
            {"200": {"description": "text/event-stream", "content": {"text/event-stream": STRING}}},
            params=[_param("service", "query", {"type": "string"}), _param("Last-Event-ID", "header", INTEGER)])},
        "/reports": {"get": _op("getReport", "A continuity report over a period, from the journal: availability, "
                                "incidents, recoveries against the RTO, drills, risks; 400 for bad dates or an "
                                "unknown service; format=pdf: 501 where headless Chromium is not installed, "
                                "500 when it fails", {**REPORT_RESPONSES, "5XX": PROBLEM}, params=REPORT_PARAMS)},
        **_plan_paths(),
        **bookings.paths(_op, _json, _param),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "bcd API", "version": __version__,
                 "description": "Business-continuity failover daemon: services, sites, runs, events."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Service": SERVICE_SCHEMA, "Run": RUN_SCHEMA, "Event": EVENT_SCHEMA,
                        "PlanRun": PLAN_RUN_SCHEMA, "Recovery": RECOVERY_SCHEMA},
            "responses": {"Problem": {"description": "An error (RFC 9457)", "content": {
                "application/problem+json": {"schema": {
                    "type": "object", "required": ["title", "status"],
                    "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                   "status": {"type": "integer"}, "detail": {"type": "string"}}}}}}},
        },
    }


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())
