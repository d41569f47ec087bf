"""structlog setup: JSON lines when stderr is not a TTY (with a `<N>` syslog prefix under systemd's
journal), readable key=value on a TTY. Stdlib loggers (aiohttp, tenacity, asyncio) go the same way.

A line that reports something that happened earlier (an event, logged at the journal's next group commit)
carries `at`, the Unix time it happened: its `timestamp` is then that time, and `logged_at` says when the
line was written, so a timeline built from the log (journald, Loki) orders events as they happened."""

from __future__ import annotations

import logging
import math
import os
import sys
from datetime import UTC, datetime
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

PRIORITY = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def under_journal() -> bool:
    """True when stderr is connected to systemd's journal (JOURNAL_STREAM names our stderr)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream or ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    device, inode = stream.split(":", 1)
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


class _PriorityPrefix:
    def __init__(self, renderer: Processor) -> None:
        self._renderer = renderer

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        level = str(event.get("level", name))
        rendered = self._renderer(logger, name, event)
        text = rendered.decode() if isinstance(rendered, bytes) else str(rendered)
        return f"<{PRIORITY.get(level, 6)}>{text}"


def own_time(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    """`timestamp` is the time in `at` (Unix seconds), when the line has one; `logged_at` the time of writing."""
    at = event.pop("at", None)
    if isinstance(at, int | float) and not isinstance(at, bool) and math.isfinite(at):
        event["logged_at"] = event.get("timestamp")
        event["timestamp"] = iso_time(at)
    elif at is not None:
        event["at"] = at  # not a time: an ordinary field
    return event


def iso_time(at: float) -> str:
    """`at` as the TimeStamper writes the time of writing: ISO 8601, UTC, microseconds, `Z`."""
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def stamps() -> list[Processor]:
    """The processors every line goes through first: context, level, and its time (see `own_time`)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        own_time,
    ]


def setup(level: str = "info", json: bool | None = None) -> None:
    """Configure structlog and stdlib logging once per process."""
    if json is None:
        json = not sys.stderr.isatty()
    shared = stamps()
    renderer: Any
    if json:
        renderer = structlog.processors.JSONRenderer()
        if under_journal():
            renderer = _PriorityPrefix(renderer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    structlog.configure(
        processors=[*shared, structlog.processors.StackInfoRenderer(), structlog.processors.format_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
