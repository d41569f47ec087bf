"""What a request carries, read with bounds: integers SQLite can hold, JSON bodies of a bounded nesting and
strict types. Anything else is a Problem (400 or 404 problem+json), never an exception that becomes a 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from bcd.json_nesting import too_nested
from bcd.web.context import CONTEXT
from bcd.web.problems import Problem, problem

INT64 = (-(2**63), 2**63 - 1)  # SQLite's integers: a larger one overflows inside the driver
MAX_BRACKETS = 32  # bodies are flat objects; json.loads recurses once per level and a deep one exhausts the stack


class Body(BaseModel):
    """A request body: unknown keys and wrong types (`"yes"` for a boolean, `1` for a string) are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


B = TypeVar("B", bound=Body)


def integer(text: str, name: str, low: int = INT64[0], high: int = INT64[1]) -> int:
    """`text` as an integer in [low, high], or a 400 Problem naming `name`."""
    try:
        value = int(text)
    except ValueError:
        raise Problem(problem(400, "Bad Request", f"{name} must be an integer, got {text[:40]!r}")) from None
    if not low <= value <= high:
        raise Problem(problem(400, "Bad Request", f"{name} must be between {low} and {high}"))
    return value


def query_int(request: web.Request, name: str, default: int, low: int = INT64[0], high: int = INT64[1]) -> int:
    text = request.query.get(name)
    return default if text is None else integer(text, name, low, high)


def clamped(request: web.Request, name: str, default: int, most: int) -> int:
    """A page size: any integer SQLite holds, clamped to 1..most (a negative LIMIT would mean no limit)."""
    return min(max(query_int(request, name, default), 1), most)


def run_id(request: web.Request) -> int:
    """The {run} of the path; an id that is no integer SQLite can hold names no run: 404."""
    text = request.match_info["run"]
    try:
        value = int(text)
    except ValueError:
        raise Problem(problem(404, "Not Found", "run ids are integers")) from None
    if not INT64[0] <= value <= INT64[1]:
        raise Problem(problem(404, "Not Found", f"no run {text[:40]}"))
    return value


async def body_of(request: web.Request, model: type[B]) -> B:
    """The request's JSON body as `model` (an empty body is `{}`), or a 400 Problem saying what is wrong."""
    try:
        async with asyncio.timeout(request.app[CONTEXT].server.request_timeout):
            raw = await request.read()
    except TimeoutError:
        detail = "the body did not arrive in time (server.request_timeout)"
        raise Problem(problem(408, "Request Timeout", detail)) from None
    if too_nested(raw, MAX_BRACKETS):
        detail = f"the body nests too deep: more than {MAX_BRACKETS} brackets (a body is one flat object)"
        raise Problem(problem(400, "Bad Request", detail))
    try:
        data: Any = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(problem(400, "Bad Request", f"the body is not JSON: {exc}")) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
                  for e in exc.errors()]
        raise Problem(problem(400, "Bad Request", "invalid request body", errors=errors)) from None
