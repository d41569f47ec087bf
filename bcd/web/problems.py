"""Errors as RFC 9457 `application/problem+json`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

PROBLEM = "application/problem+json"

log = structlog.get_logger("bcd.web")


def problem(status: int, title: str, detail: str = "", **extra: object) -> web.Response:
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


class Problem(Exception):
    """Raised inside a handler: `operations.handler` returns its response."""

    def __init__(self, response: web.Response) -> None:
        self.response = response


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP errors (404, 405, 413, …) into problem+json."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == PROBLEM:
            raise
        default_text = f"{exc.status}: {exc.reason}"
        return problem(exc.status, exc.reason, "" if exc.text in (None, default_text) else str(exc.text))
    except Exception:  # a bug: logged with its traceback, and still a problem+json, not aiohttp's text page
        log.exception("request_failed", method=request.method, path=request.path)
        return problem(500, "Internal Server Error", "bcd failed to answer this request; its log says why")
