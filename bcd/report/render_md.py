"""A report as Markdown: the same summary and sections as the HTML, for a wiki or a ticket."""

from __future__ import annotations

from collections.abc import Iterator

from bcd.report.model import RISK_KINDS, Report, ServiceReport
from bcd.report.text import apart, day, drill_legs, duration, lag_sites, percent, state_columns, when


def render_md(report: Report) -> str:
    return "\n".join(_lines(report)) + "\n"


def _lines(report: Report) -> Iterator[str]:
    period = report.period
    yield f"# {report.title}: {report.instance}, {day(period.start)} to {day(period.asked_end - 1)}"
    yield ""
    yield f"Made {when(report.generated)} from the journal."
    if report.chain is not None:
        yield (f"Journal chain head at the period's end: entry {report.chain.seq}, hash `{report.chain.hash}` "
               "(check with `bcd journal verify`).")
    yield ""
    yield "## Summary"
    yield ""
    yield "| service | availability | incidents | recoveries (RTO missed) | last drill | risks |"
    yield "|---|---|---|---|---|---|"
    for service in report.services:
        risks = sum(1 for r in report.risks if r.service == service.name)
        yield (f"| {service.name} | {percent(service.availability.ratio)} | {len(service.incidents)} | "
               f"{len(service.recoveries)} ({len(service.rto_missed)}) | {_drilled(service)} | {risks} |")
    yield ""
    yield f"Estate availability: {percent(report.availability.ratio)} (left out: {apart(report.availability)})."
    yield ""
    yield "## Risks"
    yield ""
    if report.risks:
        yield " · ".join(f"{RISK_KINDS[kind]}: {count}" for kind, count in report.risk_counts().items())
        yield ""
    yield from (f"- **{r.service}**: {r.text}" for r in report.risks) if report.risks else iter(["None."])
    if report.plan_drills:
        yield ""
        yield "## Plan drills"
        yield ""
        yield from (f"- plan {d.plan}, drill `{d.drill}`, {when(d.started)}: {d.result or 'not ended'}; {d.reason}"
                    for d in report.plan_drills)
    for service in report.services:
        yield ""
        yield from _service(service)
    if report.notes:
        yield ""
        yield "## Notes"
        yield ""
        yield from (f"- {note}" for note in report.notes)


def _drilled(service: ServiceReport) -> str:
    return "never drilled" if service.last_drill is None else when(service.last_drill)


def _service(service: ServiceReport) -> Iterator[str]:
    yield f"## {service.name}"
    yield ""
    if service.description:
        yield service.description
        yield ""
    rto, rpo = (duration(value) if value else "none" for value in (service.rto, service.rpo))
    yield (f"RTO {rto}, RPO {rpo}; "
           f"runbook {service.runbook or 'none'}. Availability {percent(service.availability.ratio)} "
           f"(left out: {apart(service.availability)}).")
    yield ""
    states = state_columns(service)
    yield f"| site | availability | {' | '.join(states)} |"
    yield "|---|---|" + "---|" * len(states)
    for site in service.sites:
        s = site.availability.seconds
        yield (f"| {site.site} | {percent(site.availability.ratio)} | "
               + " | ".join(duration(s.get(state, 0.0)) for state in states) + " |")
    yield ""
    yield f"Incidents: {len(service.incidents) or 'none'}."
    for incident in service.incidents:
        ended = "still going" if incident.end is None else f"{duration(incident.seconds)}"
        by = (f"recovered by {incident.recovery.kind.value} run {incident.recovery.run_id} to "
              f"{incident.recovery.to_site}" if incident.recovery else "no recovery run")
        yield f"- {when(incident.start)} at {incident.site}: {ended}, {by}"
    yield ""
    yield f"Recoveries: {len(service.recoveries) or 'none'}."
    for r in service.recoveries:
        met = {True: "within RTO", False: "RTO MISSED", None: "no RTO measure"}[r.rto_met]
        yield (f"- run {r.run_id} {r.kind.value} {r.from_site} → {r.to_site}: {r.result.value}, "
               f"{duration(r.timeline.total)}, {met}")
    yield ""
    yield f"Drills: {len(service.drills) if service.drills else 'never drilled in the period'}."
    for d in service.drills:
        yield (f"- drill `{d.id}` ({d.kind}) {when(d.started)}: {d.result or 'not ended'}, {duration(d.seconds)}"
               f"{f'; {d.reason}' if d.reason else ''} ({drill_legs(d)})")
    yield ""
    yield f"Data lag: {_lag(service)}"


def _lag(service: ServiceReport) -> str:
    accepted = len(service.lag.accepted)
    more = f"; {accepted} forced move(s) accepted a lag past the RPO" if accepted else ""
    if service.lag.samples:
        return f"{lag_sites(service.lag)}{more}"
    missing = "not journaled (no samples)" if service.lag.measured else "not measured (no site names a data_lag)"
    return f"{missing}{more}"
