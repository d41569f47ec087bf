"""The status page's maintenance calendar: current and upcoming windows (config and booked), with their sites,
services, times and reason. Server-rendered (the page reloads it; every value escaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape as _e  # quotes too: every value goes into text or an attribute
from typing import Any

from bcd.web.sections import table_section

SHOWN = 20  # windows listed; the rest are behind `bcd maintenance list`


def section(windows: list[dict[str, Any]], readable: bool) -> str:
    return table_section("maintenance", "Maintenance windows", ("Window", "When", "Sites", "Services", "Reason"),
                         "".join(_row(window) for window in windows[:SHOWN]), table="maintenance-windows",
                         caption="Maintenance windows, by start", empty="No maintenance window is planned.",
                         readable=readable)


def _at(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return f'<time datetime="{moment.isoformat()}">{moment:%Y-%m-%d %H:%M} UTC</time>'


def _row(window: dict[str, Any]) -> str:
    state = "<strong>now</strong>, " if window["active"] else ""
    repeats = f' <span class="every">({_e(window["every"])})</span>' if window["every"] else ""
    return (f'<tr data-window="{_e(window["name"])}"><td>{_e(window["name"])}{repeats}</td>'
            f'<td>{state}{_at(window["start"])} to {_at(window["end"])}</td><td>{_e(", ".join(window["sites"]))}</td>'
            f'<td>{_e(", ".join(window["services"]))}</td><td>{_e(window["reason"])} ({_e(window["by"])})</td></tr>')
