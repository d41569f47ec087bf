"""The status page's maintenance calendar: current and upcoming windows (config and booked), with their sites,
services, times and reason. Server-rendered (the page reloads it; every value escaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape as _e  # quotes too: every value goes into text or an attribute
from typing import Any

SHOWN = 20  # windows listed; the rest are behind `bcd maintenance list`


def section(windows: list[dict[str, Any]], readable: bool) -> str:
    rows = "".join(_row(window) for window in windows[:SHOWN])
    if rows:
        body = ('<table id="maintenance-windows" class="recent-runs"><caption class="visually-hidden">Maintenance '
                'windows, by start</caption><thead><tr><th scope="col">Window</th><th scope="col">When</th>'
                '<th scope="col">Sites</th><th scope="col">Services</th><th scope="col">Reason</th></tr></thead>'
                f"<tbody>{rows}</tbody></table>")
    else:
        body = '<p class="empty">No maintenance window is planned.</p>' if readable else ""
    return (f'<section aria-labelledby="maintenance-heading" id="maintenance"><h2 id="maintenance-heading">'
            f"Maintenance windows</h2>{body}</section>")


def _at(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return f'<time datetime="{moment.isoformat()}">{moment:%Y-%m-%d %H:%M} UTC</time>'


def _row(window: dict[str, Any]) -> str:
    state = "<strong>now</strong>, " if window["active"] else ""
    repeats = f' <span class="every">({_e(window["every"])})</span>' if window["every"] else ""
    return (f'<tr data-window="{_e(window["name"])}"><td>{_e(window["name"])}{repeats}</td>'
            f'<td>{state}{_at(window["start"])} to {_at(window["end"])}</td><td>{_e(", ".join(window["sites"]))}</td>'
            f'<td>{_e(", ".join(window["services"]))}</td><td>{_e(window["reason"])} ({_e(window["by"])})</td></tr>')
