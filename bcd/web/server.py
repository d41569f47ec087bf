"""aiohttp application: probes of the daemon itself, metrics, and the read API."""

from __future__ import annotations

import asyncio

from aiohttp import web

from bcd import __version__
from bcd.outputs.metrics import CONTENT_TYPE
from bcd.view import service_json
from bcd.web import bookings, drills, events, openapi, operations, plans, recoveries, reports, status_page
from bcd.web.auth import Role
from bcd.web.context import CONTEXT, WebContext
from bcd.web.hosts import host_middleware
from bcd.web.operations import handler
from bcd.web.problems import problem, problem_middleware

MAX_BODY = 64 * 1024


def build_app(context: WebContext) -> web.Application:
    app = web.Application(middlewares=[problem_middleware, host_middleware], client_max_size=MAX_BODY)
    app[CONTEXT] = context
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/services", list_services)
    app.router.add_get("/api/v1/services/{service}", get_service)
    operations.routes(app)
    plans.routes(app)
    drills.routes(app)
    bookings.routes(app)
    events.routes(app)
    recoveries.routes(app)
    reports.routes(app)
    app.router.add_get("/api/v1/openapi.json", openapi.serve)
    status_page.routes(app)
    return app


@handler
async def metrics(request: web.Request) -> web.StreamResponse:
    """Streamed in pieces: a large estate's exposition is never held whole in memory, and the event loop
    runs between pieces (probes due during a scrape start on time). A read like the API's: a token unless
    reads are anonymous."""
    operations.caller(request, Role.VIEWER)
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE})
    await response.prepare(request)
    for piece in request.app[CONTEXT].metrics.parts():
        await response.write(piece.encode())
        await asyncio.sleep(0)  # write() returns at once while the socket takes it: yield anyway
    await response.write_eof()
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    ready, why = request.app[CONTEXT].ready()
    return web.json_response({"ready": ready, "reason": why}, status=200 if ready else 503)


@handler
async def list_services(request: web.Request) -> web.Response:
    operations.caller(request, Role.VIEWER)
    estate = request.app[CONTEXT].view
    return web.json_response({"services": [service_json(estate, v) for v in estate.services.values()]})


@handler
async def get_service(request: web.Request) -> web.Response:
    operations.caller(request, Role.VIEWER)
    estate = request.app[CONTEXT].view
    name = request.match_info["service"]
    view = estate.services.get(name)
    if view is None:
        return problem(404, "Not Found", f"no service named {name!r}")
    return web.json_response(service_json(estate, view))
