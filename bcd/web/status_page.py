"""The status page: `GET /` renders the estate as HTML; `/static/status.js` keeps it live.

The server renders what it knows at request time (every service in every site, runs, recent events), so the page is
useful before and without JavaScript. The script then follows `/api/v1/events/stream` and re-renders the
rows, runs and events it touches from the JSON API, and carries the operator's actions (with the bearer
token the operator typed, kept in sessionStorage). No inline script or style: the page is served with a
Content-Security-Policy that forbids both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from html import escape
from importlib import resources
from typing import Any

from aiohttp import web

from bcd import __version__
from bcd.durations import format_duration
from bcd.view import EstateView, service_json
from bcd.web import bookings_page, maintenance_page, plan_page
from bcd.web.auth import Denied, Role, require
from bcd.web.context import CONTEXT
from bcd.web.problems import problem

ASSETS = {"status.js": "text/javascript", "status.css": "text/css"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
EVENTS_SHOWN = 50
RUNS_SHOWN = 10
IN_PROGRESS = ("running", "waiting_approval")
STATIC = web.AppKey("status_page_static", dict[str, bytes])


def routes(app: web.Application) -> None:
    """`GET /` and the page's two static files (read once, when the app is built)."""
    folder = resources.files("bcd.web") / "static"
    app[STATIC] = {name: (folder / name).read_bytes() for name in ASSETS}
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = request.app[STATIC].get(name)
    if body is None:
        return problem(404, "Not Found", f"no static file {name!r}")
    response = web.Response(body=body, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})
    response.content_type = ASSETS[name]
    response.charset = "utf-8"
    return response


async def page(request: web.Request) -> web.Response:
    estate = request.app[CONTEXT].view
    try:
        require(estate.config.auth, request, Role.VIEWER)
        readable = True
    except Denied:  # reads need a token: the script asks for one and fills the page in
        readable = False
    operations = request.app[CONTEXT].operations
    windows = operations.maintenance_windows() if readable else []
    booked = bookings_page.coming(operations.bookings()) if readable else []
    html = render(replace(collect(estate, readable), windows=windows, booked=booked))
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@dataclass(frozen=True)
class PageData:
    """Everything the page shows, in the API's JSON shapes (so the script renders the same data)."""

    instance: str
    sites: dict[str, str]  # name → description, in config order
    readable: bool
    services: list[dict[str, Any]]
    runs: list[dict[str, Any]]  # newest first; runs in progress carry their `steps`
    events: list[dict[str, Any]]  # newest first
    runbook_steps: dict[str, int]  # runbook → number of main steps, for "step 2 of 4"
    now: float
    plan_runs: list[dict[str, Any]]  # open recovery plan runs, newest first (bcd.web.plan_page)
    windows: list[dict[str, Any]] = field(default_factory=list)  # maintenance windows (bcd.web.maintenance_page)
    booked: list[dict[str, Any]] = field(default_factory=list)  # booked runs to come (bcd.web.bookings_page)


def collect(estate: EstateView, readable: bool) -> PageData:
    config = estate.config
    services: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    if readable:
        services = [service_json(estate, estate.services[name]) for name in config.services if name in estate.services]
        for record in estate.recent_runs(None, RUNS_SHOWN):
            run = record.to_dict()
            if record.result in IN_PROGRESS:
                run["steps"] = [step.to_dict() for step in estate.run_steps(record.id)]
            runs.append(run)
        events = [event.to_json() for event in reversed(estate.last_events(EVENTS_SHOWN))]
    return PageData(
        instance=config.instance,
        sites={name: site.description for name, site in config.sites.items()},
        readable=readable,
        services=services,
        runs=runs,
        events=events,
        runbook_steps={name: len(runbook.steps) for name, runbook in config.runbooks.items()},
        now=time.time(),
        plan_runs=plan_page.collect(estate) if readable else [],
    )


# -- rendering: every value from the config, the journal or a probe goes through escape() --------------

def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _words(value: str) -> str:
    return value.replace("_", " ")


def _time(at: float | None) -> str:
    if at is None:
        return ""
    moment = datetime.fromtimestamp(at, UTC)
    return f'<time datetime="{moment.isoformat()}">{moment:%H:%M:%S} UTC</time>'


def render(data: PageData) -> str:
    """The whole page as HTML."""
    steps_json = json.dumps(data.runbook_steps, sort_keys=True)
    return f"""<!doctype html>
<html lang="en" class="no-js">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>bcd status — {_e(data.instance)}</title>
<link rel="stylesheet" href="/static/status.css">
<script src="/static/status.js" defer></script>
</head>
<body>
<a class="skip-link" href="#estate-heading">Skip to the estate</a>
<header class="page-header">
<h1>bcd status <span class="instance">{_e(data.instance)}</span></h1>
<p class="meta">bcd {_e(__version__)} · rendered {_time(data.now)} ·
<span id="connection" class="connection">live updates need JavaScript</span></p>
</header>
<p id="updates" class="updates" role="status" aria-live="polite">No updates since the page was loaded.</p>
<div id="problems" class="problems" role="alert"></div>
<main>
{_operator_section()}
{_estate_section(data)}
{plan_page.section(data.plan_runs, data.readable, data.now)}
{maintenance_page.section(data.windows, data.readable)}
{bookings_page.section(data.booked, data.readable)}
<section aria-labelledby="runs-heading" id="runs" data-runbook-steps="{_e(steps_json)}">
<h2 id="runs-heading">Runbooks</h2>
<h3 id="active-runs-heading">In progress</h3>
<div id="active-runs">{_active_runs(data)}</div>
<h3 id="recent-runs-heading">Recent runs</h3>
{_recent_runs(data)}
</section>
<section aria-labelledby="events-heading">
<h2 id="events-heading">Recent events</h2>
<ol id="events" class="events">{"".join(_event(event) for event in data.events)}</ol>
</section>
</main>
</body>
</html>
"""


def _operator_section() -> str:
    durations = "".join(
        f'<option value="{d}"{" selected" if d == "2h" else ""}>{d}</option>'
        for d in ("30m", "1h", "2h", "4h", "8h", "1d")
    )
    return f"""<section id="operator" class="operator needs-js" aria-labelledby="operator-heading">
<h2 id="operator-heading">Operator</h2>
<form id="token-form" class="token-form" autocomplete="off">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" aria-describedby="token-help">
<button type="submit">Use token</button>
<button type="button" id="forget-token" hidden>Forget token</button>
<p id="token-state" class="token-state">No token: read only.</p>
<p id="token-help" class="help">Kept in this browser tab only (sessionStorage), sent as
<code>Authorization: Bearer</code>; never saved to disk or put in the address.</p>
</form>
<div id="operator-options" class="operator-options operator-only">
<p><label for="reason">Reason, for the journal</label>
<input id="reason" type="text" maxlength="500" placeholder="via the status page"></p>
<p><label for="maintenance-duration">Maintenance lasts</label>
<select id="maintenance-duration">{durations}</select></p>
<p><input id="force" type="checkbox">
<label for="force">Force: bypass the standby-health and cooldown guards</label></p>
</div>
</section>"""


def _estate_section(data: PageData) -> str:
    heads = "".join(
        f'<th scope="col" data-site="{_e(name)}">{_e(name)}'
        + (f'<span class="site-description">{_e(description)}</span>' if description else "")
        + "</th>"
        for name, description in data.sites.items()
    )
    if data.readable:
        rows = "".join(_row(service, list(data.sites)) for service in data.services)
    else:
        rows = (f'<tr class="placeholder"><td colspan="{len(data.sites) + 4}">This daemon needs a token to read '
                "(auth.anonymous_read is off): enter a viewer or operator token above.</td></tr>")
    shown = len(data.services)
    return f"""<section aria-labelledby="estate-heading">
<h2 id="estate-heading">Services and sites</h2>
<div class="filters" role="search">
<p><label for="label-filter">Label</label>
<select id="label-filter">{_label_options(data.services)}</select></p>
<p><label for="search">Search</label>
<input id="search" type="search" placeholder="name, description or label"></p>
<p id="filter-count" class="filter-count">{shown} of {shown} services shown</p>
</div>
<p class="legend"><span aria-hidden="true">★</span> marks the active site; the reason for a site's state shows
when you point at it, and so do each vantage's view's age and reason. A view not received again for longer
than the lease is marked stale.</p>
<table id="estate" class="estate">
<caption class="visually-hidden">Health of every service in every site</caption>
<thead><tr><th scope="col">Service</th><th scope="col">Status</th>{heads}<th scope="col">Labels</th>
<th scope="col" class="operator-only">Actions</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>"""


def _label_options(services: list[dict[str, Any]]) -> str:
    values: dict[str, set[str]] = {}
    for service in services:
        for key, value in service["labels"].items():
            values.setdefault(key, set()).add(value)
    groups = "".join(
        f'<optgroup label="{_e(key)}">'
        + "".join(f'<option value="{_e(key)}={_e(v)}">{_e(key)}: {_e(v)}</option>' for v in sorted(values[key]))
        + "</optgroup>"
        for key in sorted(values)
    )
    return f'<option value="">every label</option>{groups}'


def _row(service: dict[str, Any], sites: list[str]) -> str:
    """One service as a table row; status.js `renderRow` builds the same markup from the same JSON."""
    name = service["name"]
    labels = service["labels"]
    label_text = " ".join(f"{key}={value}" for key, value in labels.items())
    description = (f'<span class="description">{_e(service["description"])}</span>'
                   if service["description"] else "")
    description += _objectives(service.get("objectives") or {})
    guard = f'<span class="guard">guard: {_e(_words(service["guard"]))}</span>' if service["guard"] else ""
    guard += _cluster_status(service)
    cells = "".join(_site_cell(service, site) for site in sites)
    label_items = "".join(f"<li>{_e(key)}: {_e(value)}</li>" for key, value in labels.items())
    return (
        f'<tr data-service="{_e(name)}" data-labels="{_e(label_text)}" data-status="{_e(service["status"])}">'
        f'<th scope="row"><span class="service-name">{_e(name)}</span>{description}</th>'
        f'<td class="status status-{_e(service["status"])}"><span class="status-text">'
        f'{_e(_words(service["status"]))}</span>{guard}<span class="reason">{_e(service["reason"])}</span></td>'
        f'{cells}<td class="labels"><ul>{label_items}</ul></td>'
        '<td class="actions operator-only"></td></tr>'
    )


def _objectives(objectives: dict[str, float | None]) -> str:
    """The service's RTO and RPO under its name (status.js `objectivesText`); nothing when it has neither."""
    parts = [f"{name.upper()} {format_duration(value)}" for name, value in objectives.items() if value is not None]
    return f'<span class="objectives">{_e(", ".join(parts))}</span>' if parts else ""


def _site_cell(service: dict[str, Any], site: str) -> str:
    health = service["sites"].get(site)
    if health is None:
        name = _e(site)
        return f'<td class="site site-none" data-site="{name}">—<span class="visually-hidden">not in {name}</span></td>'
    active = service["active"] == site
    marker = ('<span class="marker"><span aria-hidden="true">★</span><span class="visually-hidden">active</span>'
              "</span> " if active else "")
    until = health.get("maintenance_until")
    maintenance = f'<span class="until">until {_time(until)}</span>' if until else ""
    if health.get("impacted_by"):
        planned = health.get("impacted_maintenance")
        planned = f" (in maintenance: {_e(planned)})" if planned else ""
        maintenance += f'<span class="impacted">impacted by {_e(health["impacted_by"])}{planned}</span>'
    return (
        f'<td class="site state-{_e(health["state"])}{" is-active" if active else ""}" data-site="{_e(site)}" '
        f'title="{_e(health["reason"])}">{marker}<span class="state">{_e(health["state"])}</span>'
        f'<span class="visually-hidden">: {_e(health["reason"])}</span>{maintenance}{_views(service, site)}</td>'
    )


def _cluster_status(service: dict[str, Any]) -> str:
    """In a cluster: who holds the service's lock, and whether etcd can be reached (status.js `clusterStatus`)."""
    if "views" not in service:
        return ""
    lock = service.get("lock")
    holder = (f'{_e(lock["holder"])}{" (this instance)" if lock.get("held_here") else ""}' if lock else "nobody")
    text = f'<span class="lock">lock: {holder}</span>'
    if service.get("coordination") == "down":
        text += '<span class="coordination">coordination unavailable</span>'
    return text


def _views(service: dict[str, Any], site: str) -> str:
    """In a cluster: every vantage's view of the site, side by side, a stale one saying so; each view's age and
    reason show when you point at the list (status.js `viewsList`)."""
    views = service.get("views")
    if views is None:
        return ""
    items = "".join(
        f'<li class="view-{_e(state)}{" view-stale" if view.get("stale") else ""}" data-vantage="{_e(vantage)}">'
        f"{_e(vantage)}: {_e(state)}{_e(_stale_words(view))}</li>"
        for vantage, view in views.items()
        for state in [view.get("sites", {}).get(site, {}).get("state", "unknown")]
    )
    return (f'<ul class="views" aria-label="as each vantage sees it" title="{_e(_views_title(views, site))}">'
            f"{items}</ul>")


def _stale_words(view: dict[str, Any]) -> str:
    """After a stale view's state (status.js `staleWords`)."""
    if not view.get("stale"):
        return ""
    return f" — stale: not received for {view['age']:.1f}s (lease {view['lease_ttl']:g}s)"


def _views_title(views: dict[str, Any], site: str) -> str:
    """Each view of the site with its age and reason, one per line (status.js `viewsTitle`)."""
    lines = []
    for vantage, view in views.items():
        seen = view.get("sites", {}).get(site, {})
        lines.append(f"{vantage}: {seen.get('state', 'unknown')}, received {view['age']:.1f}s ago"
                     f"{' (stale)' if view.get('stale') else ''}: {seen.get('reason', 'no view of this site')}")
    return "\n".join(lines)


def _active_runs(data: PageData) -> str:
    active = [run for run in data.runs if run["result"] in IN_PROGRESS]
    if not active:
        return '<p class="empty">No runbook is running.</p>' if data.readable else ""
    return "".join(_active_run(run, data.runbook_steps.get(run["runbook"])) for run in active)


def _active_run(run: dict[str, Any], total: int | None) -> str:
    """A run in progress; status.js `renderActiveRun` builds the same markup."""
    steps = run.get("steps", [])
    main = [step for step in steps if step["phase"] == "main"]
    done = sum(1 for step in main if step["ended"] is not None)
    current = steps[-1]["name"] if steps else ""
    waiting = run["result"] == "waiting_approval"
    state = "waiting for approval" if waiting else "running"
    progress = f"step {len(main)} of {total}" if total else f"step {len(main)}"
    items = "".join(
        f'<li class="outcome-{_e(step["outcome"])}">{_e(step["name"])} — {_e(_words(step["outcome"]))}</li>'
        for step in steps
    )
    bar = f'<progress max="{total}" value="{done}" aria-hidden="true"></progress>' if total else ""
    return (
        f'<article class="run{" waiting" if waiting else ""}" data-run="{run["id"]}">'
        f'<h4>Run {run["id"]}: {_e(run["service"])} {_e(run["kind"])} {_e(run["from"])} → {_e(run["to"])}</h4>'
        f'<p class="run-state"><strong>{state}</strong>, {progress}'
        f'{f": {_e(current)}" if current else ""} {bar}</p>'
        f'<ol class="steps">{items}</ol><p class="run-actions operator-only"></p></article>'
    )


def _recent_runs(data: PageData) -> str:
    rows = "".join(
        f'<tr data-run="{run["id"]}"><td>{run["id"]}</td><td>{_e(run["service"])}</td><td>{_e(run["kind"])}'
        f'{" (dry run)" if run["dry_run"] else ""}</td><td>{_e(run["from"])} → {_e(run["to"])}</td>'
        f'<td>{_e(run["trigger"])}</td><td>{_time(run["started"])}</td>'
        f'<td class="result result-{_e(run["result"])}">{_e(_words(run["result"]))}</td></tr>'
        for run in data.runs
    )
    return ('<table id="recent-runs" class="recent-runs"><caption class="visually-hidden">Recent runbook runs, '
            'newest first</caption><thead><tr><th scope="col">Run</th><th scope="col">Service</th>'
            '<th scope="col">Kind</th><th scope="col">From → to</th><th scope="col">Trigger</th>'
            f'<th scope="col">Started</th><th scope="col">Result</th></tr></thead><tbody>{rows}</tbody></table>')


def _event(event: dict[str, Any]) -> str:
    """One journal event; status.js `renderEvent` builds the same markup."""
    where = " in ".join(_e(part) for part in (event.get("service"), event.get("site")) if part)
    return (
        f'<li data-id="{_e(event.get("id"))}">{_time(event["at"])} <span class="kind">{_e(_words(event["kind"]))}'
        f'</span> <span class="subject">{where}</span> <span class="reason">{_e(event["reason"])}</span></li>'
    )
