"""What the HTTP handlers read, passed in by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from bcd.config import Server
from bcd.operations import Operations
from bcd.outputs.metrics import Metrics
from bcd.view import EstateView


@dataclass
class WebContext:
    view: EstateView  # what the handlers read
    operations: Operations  # what they act through
    metrics: Metrics
    ready: Callable[[], tuple[bool, str]]
    server: Server  # as at start: a reload does not change the server (README: `server` needs a restart)


CONTEXT = web.AppKey("context", WebContext)
