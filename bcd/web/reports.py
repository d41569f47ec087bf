"""`GET /reports?from=2026-07-01&to=2026-09-30[&service=…][&format=html|json|md|pdf]`: a continuity report
(bcd.report), made from the journal read-only in a thread of its own, so the event loop and the journal's
writer go on meanwhile; a PDF is its HTML printed by headless Chromium, a child process with a deadline
(bcd.report.pdf; 501 where Chromium is not installed). One report at a time (a second asks again later: 429):
a year of a large estate takes seconds and tens of MB."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web

from bcd.daemon_thread import in_daemon_thread
from bcd.report import MEDIA_TYPES, ReportError
from bcd.report.dates import period
from bcd.report.make import RENDERERS, make_report
from bcd.report.pdf import PdfError, chromium, html_to_pdf, not_installed
from bcd.web.auth import Role
from bcd.web.context import CONTEXT
from bcd.web.operations import caller, handler
from bcd.web.problems import problem

BUSY = web.AppKey("reports_busy", asyncio.Lock)
FORMATS = (*RENDERERS, "pdf")

log = structlog.get_logger("bcd.web")


def routes(app: web.Application) -> None:
    app[BUSY] = asyncio.Lock()
    app.router.add_get("/reports", get_report)


@handler
async def get_report(request: web.Request) -> web.Response:
    caller(request, Role.VIEWER)
    query = request.query
    missing = [name for name in ("from", "to") if not query.get(name)]
    if missing:
        return problem(400, "Bad Request", f"missing {' and '.join(missing)}: e.g. "
                                           "/reports?from=2026-07-01&to=2026-09-30")
    fmt = query.get("format", "html")
    if fmt not in FORMATS:
        return problem(400, "Bad Request", f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "pdf" and chromium() is None:
        return problem(501, "Not Implemented", not_installed("format=pdf", "format=html"))
    config = request.app[CONTEXT].view.config
    services = query.getall("service", []) or None
    try:
        start, end = period(query["from"], query["to"])
    except ReportError as exc:
        return problem(400, "Bad Request", str(exc))
    lock = request.app[BUSY]
    if lock.locked():
        return problem(429, "Too Many Requests", "a report is being made: ask again when it is done")
    async with lock:
        try:
            report = await in_daemon_thread(make_report, config, start, end, services)
            text = await in_daemon_thread(RENDERERS["html" if fmt == "pdf" else fmt], report)
        except ReportError as exc:
            return problem(400, "Bad Request", str(exc))
        if fmt == "pdf":
            return await _printed(text)
    return web.Response(text=text, content_type=MEDIA_TYPES[fmt], charset="utf-8")


async def _printed(html: str) -> web.Response:
    """The report's PDF, or a 500 problem saying in one line why Chromium did not print it."""
    try:
        pdf = await html_to_pdf(html)
    except PdfError as exc:
        log.warning("report_pdf_failed", reason=str(exc))
        return problem(500, "Internal Server Error", str(exc))
    return web.Response(body=pdf, content_type=MEDIA_TYPES["pdf"])


REPORT_PARAMS: list[dict[str, Any]] = [
    {"name": "from", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "first day (2026-07-01) or an ISO time, UTC unless it says otherwise"},
    {"name": "to", "in": "query", "required": True, "schema": {"type": "string"},
     "description": "last day, included (2026-09-30), or an ISO time (excluded)"},
    {"name": "service", "in": "query", "schema": {"type": "string"}, "description": "only this service (repeatable)"},
    {"name": "format", "in": "query", "schema": {"enum": list(FORMATS)},
     "description": "html (default); pdf is the html printed by headless Chromium (501 where it is not installed)"},
]
REPORT_RESPONSES: dict[str, Any] = {
    "200": {"description": "the report: one self-contained HTML document, JSON, Markdown or PDF",
            "content": {MEDIA_TYPES[fmt]: {"schema": {"type": "object" if fmt == "json" else "string"}
                                           | ({"format": "binary"} if fmt == "pdf" else {})}
                        for fmt in FORMATS}},
}
