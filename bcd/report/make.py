"""A report made from the journal in a config's state_dir, and its renderers.

`make_report` opens the journal read-only, so a report can be made while the daemon runs (WAL: the daemon's
writer is never blocked) or with no daemon at all."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from bcd.config import Config
from bcd.journal.ledger_check import open_readonly
from bcd.report import FORMATS, ReportError
from bcd.report.compute import compute
from bcd.report.model import Report
from bcd.report.render_html import render_html
from bcd.report.render_json import render_json
from bcd.report.render_md import render_md
from bcd.state_dir import JOURNAL_NAME

RENDERERS: dict[str, Callable[[Report], str]] = dict(zip(FORMATS, (render_html, render_json, render_md), strict=True))


def journal_of(config: Config) -> Path:
    """The journal in the config's state_dir; ReportError when there is none."""
    state_dir = Path(config.state_dir)
    if not state_dir.is_dir():
        raise ReportError(f"state_dir {state_dir} does not exist: no journal to report on "
                          "(has the daemon run with this config?)")
    path = state_dir / JOURNAL_NAME
    if not path.is_file() or path.stat().st_size == 0:
        raise ReportError(f"{path}: no journal there (state_dir of the config): has the daemon run with it?")
    return path


def make_report(config: Config, start: float, end: float, services: Sequence[str] | None = None,
                now: float | None = None) -> Report:
    """The report of [start, end) from the journal in the config's state_dir, read-only. ReportError when the
    journal is missing or unreadable, or a service is unknown."""
    path = journal_of(config)
    try:
        with contextlib.closing(open_readonly(path)) as db:
            return compute(config, db, start, end, services=services, now=now)
    except sqlite3.Error as exc:
        raise ReportError(f"{path}: cannot be read as a journal: {exc}") from exc
