"""A report as one self-contained HTML document (inline CSS with a print stylesheet, no scripts, no external
assets): a summary for a manager first, then one section per service."""

from __future__ import annotations

from collections.abc import Iterator
from html import escape

from bcd.report.model import RISK_KINDS, STATES, Availability, Incident, Report, ServiceReport
from bcd.report.text import apart, day, drill_legs, duration, lag_sites, percent, state_columns, when

CSS = """
:root { --ink: #1d2733; --muted: #5b6773; --line: #d5dbe1; --ok: #2e7d32; --bad: #c62828; --warn: #b26a00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 "DejaVu Sans", system-ui, sans-serif; color: var(--ink); margin: 0 auto; max-width: 1100px;
       padding: 24px 32px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px; border-bottom: 2px solid var(--line);
     padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
.meta, .muted { color: var(--muted); } .meta { margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; }
.card b { display: block; font-size: 22px; } .card span { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: var(--muted); font-weight: 600; } td.num { text-align: right; white-space: nowrap; }
.ok { color: var(--ok); } .bad { color: var(--bad); font-weight: 600; } .warn { color: var(--warn); }
ul.risks li { margin: 3px 0; }
.bar { display: flex; height: 12px; border-radius: 3px; overflow: hidden; background: #eef1f4; min-width: 160px; }
.bar i { display: block; height: 100%; }
.s-up { background: #43a047; } .s-degraded { background: #fbc02d; } .s-down { background: #e53935; }
.s-flapping { background: #8e24aa; } .s-unknown { background: #b0bec5; } .s-maintenance { background: #1e88e5; }
.s-unobserved { background: repeating-linear-gradient(45deg, #cfd8dc 0 3px, #fff 3px 6px); }
.legend i { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 10px; border-radius: 2px; }
section.service { page-break-inside: avoid; }
code { font-size: 12px; word-break: break-all; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; } h2 { page-break-after: avoid; }
  section.service { page-break-before: auto; } .card { break-inside: avoid; }
  .bar, .legend i { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  @page { size: A4; margin: 14mm 12mm; }
}
"""


def render_html(report: Report) -> str:
    return "".join(_document(report))


def _document(report: Report) -> Iterator[str]:
    period = report.period
    title = f"{report.title}: {report.instance}, {day(period.start)} to {day(period.asked_end - 1)}"
    yield (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
           f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>\n')
    yield f"<h1>{escape(report.title)}</h1>"
    yield (f'<p class="meta">{escape(report.instance)} · {day(period.start)} to {day(period.asked_end - 1)} · '
           f"made {when(report.generated)} from the journal</p>\n")
    yield from _summary(report)
    yield from _plan_drills(report)
    for service in report.services:
        yield from _service(service, report)
    yield from _footer(report)
    yield "</body></html>\n"


def _summary(report: Report) -> Iterator[str]:
    services = report.services
    missed = sum(len(s.rto_missed) for s in services)
    cards = [
        (percent(report.availability.ratio), "availability across the estate", ""),
        (str(sum(len(s.incidents) for s in services)), "incidents", ""),
        (str(sum(len(s.recoveries) for s in services)), "recoveries", ""),
        (str(missed), "recoveries over their RTO", "bad" if missed else "ok"),
        (f"{sum(1 for s in services if s.drills)} / {len(services)}", "services drilled in the period", ""),
        (str(len(report.risks)), "risks", "bad" if report.risks else "ok"),
    ]
    yield '<section id="summary"><h2>Summary</h2><div class="cards">'
    for value, label, tone in cards:
        yield f'<div class="card"><b class="{tone}">{escape(value)}</b><span>{escape(label)}</span></div>'
    yield "</div>"
    yield ('<table class="overview"><thead><tr><th>Service</th><th>Availability</th><th>Time in each state</th>'
           "<th>Incidents</th><th>Recoveries</th><th>RTO missed</th><th>Last drill</th><th>Risks</th></tr>"
           "</thead><tbody>")
    for s in services:
        risks = sum(1 for r in report.risks if r.service == s.name)
        drill = "never drilled" if s.last_drill is None else day(s.last_drill)
        yield (f'<tr><td><a href="#service-{escape(s.name)}">{escape(s.name)}</a></td>'
               f'<td class="num">{percent(s.availability.ratio)}</td><td>{_bar(s.availability)}</td>'
               f'<td class="num">{len(s.incidents)}</td><td class="num">{len(s.recoveries)}</td>'
               f'<td class="num {"bad" if s.rto_missed else ""}">{len(s.rto_missed)}</td>'
               f'<td class="{"warn" if s.last_drill is None else ""}">{drill}</td>'
               f'<td class="num {"bad" if risks else "ok"}">{risks}</td></tr>')
    yield "</tbody></table>" + _legend()
    counts = " · ".join(f"{RISK_KINDS[kind]}: {count}" for kind, count in report.risk_counts().items())
    yield f'<h3>Risks</h3><p class="risk-counts">{escape(counts or "none")}</p><ul class="risks">'
    yield "".join(f"<li><b>{escape(r.service)}</b>: {escape(r.text)}</li>" for r in report.risks) or "<li>None.</li>"
    yield "</ul></section>\n"


def _bar(availability: Availability) -> str:
    total = sum(availability.seconds.values())
    if total <= 0:
        return '<div class="bar"></div>'
    parts = "".join(f'<i class="s-{state}" style="width:{availability.seconds[state] / total * 100:.3f}%" '
                    f'title="{state} {duration(availability.seconds[state])}"></i>'
                    for state in STATES if availability.seconds.get(state, 0.0) > 0)
    return f'<div class="bar">{parts}</div>'


def _legend() -> str:
    return '<p class="legend muted">' + "".join(f'<i class="s-{s}"></i>{s}' for s in STATES) + "</p>"


def _service(service: ServiceReport, report: Report) -> Iterator[str]:
    name = escape(service.name)
    yield f'<section class="service" id="service-{name}"><h2>{name}</h2>'
    if service.description:
        yield f"<p>{escape(service.description)}</p>"
    objectives = (f"RTO {duration(service.rto) if service.rto else '<span class=warn>none</span>'} · "
                  f"RPO {duration(service.rpo) if service.rpo else '<span class=warn>none</span>'} · "
                  f"failover runbook {escape(service.runbook) if service.runbook else '<span class=warn>none</span>'}")
    yield f'<p>{objectives}</p><p><b>Availability {percent(service.availability.ratio)}</b> '
    yield f'<span class="muted">(up over time observed; left out: {escape(apart(service.availability))})</span></p>'
    states = state_columns(service)
    yield ("<table><thead><tr><th>Site</th><th>Availability</th><th>Time in each state</th>"
           + "".join(f"<th>{state.capitalize()}</th>" for state in states)
           + "<th>Standby not up</th></tr></thead><tbody>")
    for site in service.sites:
        seconds = site.availability.seconds
        standby = "—" if site.standby_not_up_ratio is None else percent(site.standby_not_up_ratio, 2)
        yield (f"<tr><td>{escape(site.site)}</td><td class=num>{percent(site.availability.ratio)}</td>"
               f"<td>{_bar(site.availability)}</td>"
               + "".join(f"<td class=num>{duration(seconds.get(state, 0.0))}</td>" for state in states)
               + f"<td class=num>{standby}</td></tr>")
    yield "</tbody></table>"
    yield from _incidents(service.incidents)
    yield from _recoveries(service)
    yield from _drills(service, report)
    yield f"<h3>Data lag against the RPO</h3><p>{escape(_lag(service))}</p></section>\n"


def _incidents(incidents: tuple[Incident, ...]) -> Iterator[str]:
    yield "<h3>Incidents</h3>"
    if not incidents:
        yield '<p class="muted">None in the period.</p>'
        return
    yield ("<table><thead><tr><th>First failure</th><th>Site</th><th>Back up after</th><th>Ended by</th>"
           "</tr></thead><tbody>")
    for incident in incidents:
        r = incident.recovery
        ended = ('<span class="bad">still going</span>' if incident.end is None else duration(incident.seconds))
        by = ("the site came back by itself" if r is None else
              f"{r.kind.value} run {r.run_id} to {escape(r.to_site)} ({_rto(r.rto_met)})")
        yield (f"<tr><td>{when(incident.start)}</td><td>{escape(incident.site)}</td><td>{ended}</td>"
               f"<td>{by}</td></tr>")
    yield "</tbody></table>"


def _rto(met: bool | None) -> str:
    return {True: '<span class="ok">within RTO</span>', False: '<span class="bad">RTO missed</span>',
            None: "no RTO measure"}[met]


def _recoveries(service: ServiceReport) -> Iterator[str]:
    yield "<h3>Recoveries against the RTO</h3>"
    if not service.recoveries:
        yield '<p class="muted">None in the period.</p>'
        return
    yield ("<table><thead><tr><th>Run</th><th>Started</th><th>Kind</th><th>Move</th><th>Result</th><th>Took</th>"
           "<th>RTO</th></tr></thead><tbody>")
    for r in service.recoveries:
        yield (f"<tr><td>{r.run_id}</td><td>{when(r.timeline.started)}</td><td>{r.kind.value} ({escape(r.trigger)})"
               f"</td><td>{escape(r.from_site)} → {escape(r.to_site)}</td><td>{r.result.value}</td>"
               f"<td class=num>{duration(r.timeline.total)}</td><td>{_rto(r.rto_met)}</td></tr>")
    yield "</tbody></table>"


def _drills(service: ServiceReport, report: Report) -> Iterator[str]:
    yield "<h3>Drills</h3>"
    if not service.drills:
        last = ("never drilled" if service.last_drill is None
                else f"none in the period; last successful drill {when(service.last_drill)}")
        yield f'<p class="{"warn" if service.last_drill is None else "muted"}">{last}</p>'
        return
    yield ("<table><thead><tr><th>Drill</th><th>Kind</th><th>Started</th><th>Outcome</th><th>Took</th><th>Why</th>"
           "<th>Runs</th></tr></thead><tbody>")
    for drill in service.drills:
        outcome = f'<span class="{"ok" if drill.passed else "bad"}">{escape(drill.result or "not ended")}</span>'
        yield (f"<tr><td><code>{escape(drill.id)}</code></td><td>{escape(drill.kind)}</td><td>{when(drill.started)}"
               f"</td><td>{outcome}</td><td class=num>{duration(drill.seconds)}</td><td>{escape(drill.reason)}</td>"
               f"<td>{escape(drill_legs(drill))}</td></tr>")
    yield "</tbody></table>"


def _lag(service: ServiceReport) -> str:
    if service.lag.samples:
        text = lag_sites(service.lag) + "."
    elif not service.lag.measured:
        text = f"Not measured: no site of {escape(service.name)} names a data_lag."
    else:
        text = "Not journaled: the journal holds no data-lag events, so the worst lag in the period cannot be shown."
    if service.lag.accepted:
        text += f" Forced moves accepted a lag past the RPO {len(service.lag.accepted)} time(s) (see risks)."
    return text


def _plan_drills(report: Report) -> Iterator[str]:
    """The drills of recovery plans (their legs are also in each moved service's drills), when there were any."""
    if not report.plan_drills:
        return
    yield ('<section id="plan-drills"><h2>Plan drills</h2><table><thead><tr><th>Plan</th><th>Drill</th>'
           "<th>Started</th><th>Outcome</th><th>Why</th></tr></thead><tbody>")
    for d in report.plan_drills:
        outcome = f'<span class="{"ok" if d.passed else "bad"}">{escape(d.result or "not ended")}</span>'
        yield (f"<tr><td>{escape(d.plan)}</td><td><code>{escape(d.drill)}</code></td><td>{when(d.started)}</td>"
               f"<td>{outcome}</td><td>{escape(d.reason)}</td></tr>")
    yield "</tbody></table></section>\n"


def _footer(report: Report) -> Iterator[str]:
    yield '<section id="evidence"><h2>Evidence</h2>'
    if report.chain is not None:
        yield (f"<p>The journal's hash chain as of the period's end: entry {report.chain.seq} "
               f"({when(report.chain.at)}), hash <code>{report.chain.hash}</code>. "
               "<code>bcd journal verify</code> checks that nothing before it was altered.</p>")
    else:
        yield '<p class="warn">The journal has no hash chain for this period.</p>'
    yield "".join(f'<p class="muted">{escape(note)}</p>' for note in report.notes)
    yield (f'<p class="muted">Drills are expected at least every {duration(report.drills_max_age)} '
           "(drills_max_age). Availability is time up over time observed; maintenance, time before the first "
           "probe (unknown) and time the daemon was not running (unobserved) are shown apart and left out.</p>")
    yield "</section>\n"
