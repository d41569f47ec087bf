"""Every error is problem+json: aiohttp's own (404, 405, 413) and, as a last resort, a handler's bug."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bcd.web.problems import PROBLEM, problem_middleware


async def broken(request: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def test_a_bug_in_a_handler_is_a_problem_not_a_text_page(aiohttp_client: Any) -> None:
    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    response = await client.get("/broken")
    assert (response.status, response.content_type) == (500, PROBLEM)
    assert (await response.json())["title"] == "Internal Server Error"
    response = await client.get("/nowhere")
    assert (response.status, response.content_type) == (404, PROBLEM)
