"""Booking endpoints: book a failover, failback or recovery plan run for a set time, list bookings (runs and
maintenance windows), show and cancel one. Reads and actions go through operations (bcd.booked_runs)."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import Field, model_validator

from bcd.authority import Action, Actor
from bcd.calendar import when
from bcd.model import RunKind
from bcd.operations import CancelBooking, Intent, Refusal, Refused, RunPlan, Transfer
from bcd.web.auth import Role
from bcd.web.context import CONTEXT
from bcd.web.inputs import Body, body_of
from bcd.web.operations import ReasonBody, actor, caller, handler, refused
from bcd.web.problems import problem

AT = "its time, ISO 8601 (2026-12-10T22:15:00+00:00; without an offset: UTC)"


class BookingBody(Body):
    kind: Literal["failover", "failback", "plan"]
    service: str | None = Field(None, description="the service (failover, failback)")
    plan: str | None = Field(None, description="the recovery plan (plan)")
    to: str | None = Field(None, description="target site (default: the policy's pick at its time)")
    at: str = Field(description=AT, max_length=64)
    reason: str = Field(min_length=1, max_length=500)
    force: bool = Field(False, description="bypass the standby-health and cooldown guards at its time (journaled)")

    @model_validator(mode="after")
    def _target(self) -> BookingBody:
        if self.kind == "plan" and (self.plan is None or self.service is not None or self.to is not None):
            raise ValueError("a plan booking names `plan` (and no service or to)")
        if self.kind != "plan" and (self.service is None or self.plan is not None):
            raise ValueError(f"a {self.kind} booking names `service` (and no plan)")
        return self


def routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/bookings", list_bookings)
    app.router.add_post("/api/v1/bookings", book)
    app.router.add_get("/api/v1/bookings/{booking}", get_booking)
    app.router.add_post("/api/v1/bookings/{booking}/cancel", cancel)


def _found(request: web.Request) -> dict[str, Any] | web.Response:
    wanted = request.match_info["booking"]
    found = request.app[CONTEXT].operations.bookings(wanted)
    return found[0] if found else refused(Refused(Refusal.NOT_FOUND, f"no booking {wanted[:40]!r}"))


async def _perform(request: web.Request, intent: Intent, who: Actor, status: int) -> web.Response:
    outcome = await request.app[CONTEXT].operations.perform(intent, who)
    if isinstance(outcome, Refused):
        return refused(outcome)
    return web.json_response({"detail": outcome.detail, "booking": outcome.booking}, status=status)


@handler
async def list_bookings(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    return web.json_response({"bookings": request.app[CONTEXT].operations.bookings()})


@handler
async def get_booking(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    found = _found(request)
    return found if isinstance(found, web.Response) else web.json_response(found)


@handler
async def book(request: web.Request) -> web.Response:
    who = actor(request, Action.TRANSFER)
    body = await body_of(request, BookingBody)
    try:
        at = when(body.at)
    except ValueError as exc:
        return problem(400, "Bad Request", f"at: {exc}")
    intent: Intent
    if body.plan is not None:
        intent = RunPlan(body.plan, who.name, body.reason, body.force, at=at)
    else:
        assert body.service is not None
        intent = Transfer(body.service, RunKind(body.kind), who.name, body.reason, body.to, body.force, at=at)
    return await _perform(request, intent, who, 201)


@handler
async def cancel(request: web.Request) -> web.Response:
    who = caller(request, Role.VIEWER)  # bcd.operations decides: whoever may book what it books
    body = await body_of(request, ReasonBody)
    return await _perform(request, CancelBooking(request.match_info["booking"], who.name, body.reason), who, 200)


BOOKING_SCHEMA = {
    "type": "object", "required": ["id", "kind", "at", "by", "reason", "state"],
    "properties": {
        "id": {"type": "string"}, "kind": {"enum": ["maintenance", "failover", "failback", "plan"]},
        "at": {"type": "number", "description": "its time (epoch seconds)"}, "by": {"type": "string"},
        "reason": {"type": "string"}, "booked_at": {"type": "number"},
        "state": {"enum": ["booked", "starting", "started", "refused", "missed", "interrupted", "cancelled"]},
        "service": {"type": ["string", "null"]}, "plan": {"type": ["string", "null"]},
        "to": {"type": ["string", "null"]}, "force": {"type": "boolean"},
        "site": {"type": ["string", "null"]}, "sites": {"type": "array", "items": {"type": "string"}},
        "duration": {"type": ["number", "null"]}, "name": {"type": ["string", "null"]},
        "taken_by": {"type": ["string", "null"], "description": "the instance that started it or decided it"},
        "decided_at": {"type": ["number", "null"]}, "detail": {"type": "string", "description": "why it ended so"},
        "run_id": {"type": ["integer", "null"]}, "plan_run": {"type": ["integer", "null"]},
        "ended_by": {"type": ["string", "null"], "description": "who cut a maintenance window in progress short"},
    },
}


def paths(op: Any, json_schema: Any, param: Any) -> dict[str, Any]:
    """The OpenAPI paths of these endpoints (`op`, `json_schema`, `param`: bcd.web.openapi's builders)."""
    booking = param("booking", "path", {"type": "string"})
    outcome = json_schema({"type": "object", "required": ["detail", "booking"], "properties": {
        "detail": {"type": "string"}, "booking": BOOKING_SCHEMA}})
    return {
        "/api/v1/bookings": {
            "get": op("listBookings", "Bookings (runs and maintenance windows): those to come or in progress by "
                      "time, then the latest over", {"200": json_schema({
                          "type": "object", "required": ["bookings"], "properties": {
                              "bookings": {"type": "array", "items": BOOKING_SCHEMA}}})}),
            "post": op("book", "Book a failover, failback or plan run for a set time (operator)", {"201": outcome},
                       body=BookingBody, operator=True)},
        "/api/v1/bookings/{booking}": {"get": op("getBooking", "One booking", {"200": json_schema(BOOKING_SCHEMA)},
                                                 params=[booking])},
        "/api/v1/bookings/{booking}/cancel": {"post": op(
            "cancelBooking", "Cancel a booking before its time (operator)", {"200": outcome}, body=ReasonBody,
            params=[booking], operator=True)},
    }
