"""A continuity report computed from a journal and the config: `compute()` returns the typed Report
(bcd.report.model) that the renderers turn into HTML, JSON or Markdown."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from bcd.config import Config
from bcd.drills.records import last_successes
from bcd.journal.run_records import RunRecord, StepRecord
from bcd.recoveries import Recovery, RecoveryKind, derive
from bcd.report import ReportError
from bcd.report.availability import ServiceTrack, start_tracks, walk
from bcd.report.drills import legs, service_drills
from bcd.report.model import (
    Availability,
    Drill,
    Incident,
    LagFinding,
    Period,
    Report,
    ServiceReport,
    SiteReport,
)
from bcd.report.risks import risks
from bcd.report.source import chain_head, events, first_event, plan_drills, steps, words
from bcd.report.source import runs as read_runs
from bcd.report.source import spans as read_spans
from bcd.report.text import when

NO_LAG_SAMPLES = ("The journal holds no data-lag events (no site names a data_lag probe, or the journal predates "
                  "them): the worst lag in the period cannot be shown; lags accepted by forced moves are.")
NO_SPANS = ("This journal predates the daemon's uptime records: the daemon's own downtime cannot be told apart "
            "and counts as observed.")


def drills_max_age(config: Config) -> float:
    """`defaults.drills_max_age` (365d unless set): a service not drilled this long is a risk."""
    return float(config.defaults.drills_max_age)


def compute(config: Config, db: sqlite3.Connection, start: float, end: float, *,
            services: Sequence[str] | None = None, now: float | None = None) -> Report:
    """The report of [start, end) for `services` (all configured when None). Raises ReportError for a service
    the config does not have."""
    now = time.time() if now is None else now
    unknown = [name for name in services or () if name not in config.services]
    if unknown:
        raise ReportError(f"no service named {', '.join(map(repr, unknown))} in the config "
                          f"(it has {', '.join(sorted(config.services)) or 'none'})")
    names = list(services) if services else sorted(config.services)
    period = Period(start, max(start, min(end, now)), end)
    only = names if services else None
    spans = read_spans(db, period.start, period.end, now)
    tracks = start_tracks(period.start, {name: tuple(config.services[name].sites) for name in names},
                          {name: config.services[name].active for name in names})
    known = words({site for name in names for site in config.services[name].sites})
    journal_gaps = walk(tracks, events(db, period.end, only, known), spans, known, period.start)
    for track in tracks.values():
        track.finish(period.end, spans)
    runs = read_runs(db, period.start, period.end, only)
    recoveries = _recoveries(config, runs, steps(db, period.start, period.end, only), tracks)
    drills = service_drills(db, period.start, period.end, only,
                            legs(runs, (r for moves in recoveries.values() for r in moves)))
    last = last_successes(db, period.end)
    accepted = _lags_accepted(runs)
    reports = tuple(_service(config, tracks[name], recoveries.get(name, []), drills=drills.get(name, ()),
                             last_drill=last.get(name),
                             lag=_lag(tracks[name], config.objectives(name).rpo, accepted.get(name, ()), period.end,
                                      measured=any(site.data_lag for site in config.services[name].sites.values())))
                    for name in names)
    max_age = drills_max_age(config)
    notes = ([] if any(r.lag.samples for r in reports) else [NO_LAG_SAMPLES]) + ([NO_SPANS] if spans.spans is None
                                                                               else [])
    notes += [f"The journal lost events in the period: {reason}" for reason in journal_gaps]
    oldest = first_event(db)
    if oldest is None or oldest > period.start:
        notes.append(f"The journal holds no event before {when(oldest)} (pruned by journal.keep, or not yet "
                     "written): time before it counts as unknown, left out of availability.")
    if period.end < end:
        notes.append("The period ends after the report was made: it is counted up to then.")
    chain = chain_head(db, period.end)
    return Report(title="Continuity report", instance=config.instance, generated=now, period=period,
                  services=reports, risks=tuple(risks(config, reports, period, max_age)), chain=chain,
                  drills_max_age=max_age, notes=tuple(notes),
                  plan_drills=tuple(plan_drills(db, period.start, period.end)))


def _recoveries(config: Config, runs: list[RunRecord], run_steps: dict[int, list[StepRecord]],
                tracks: dict[str, ServiceTrack]) -> dict[str, list[Recovery]]:
    """Each run as a recovery (bcd.recoveries), its decision from the transitions to `down` the walk saw (every
    one in the journal before the period's end)."""
    out: dict[str, list[Recovery]] = {}
    for run in runs:
        if run.service not in tracks:  # a service no longer configured
            continue
        rto = config.objectives(run.service).rto
        downs = tracks[run.service].downs.get(run.from_site, [])
        recovery = derive(run, run_steps.get(run.id, []), downs, rto)
        out.setdefault(run.service, []).append(recovery)
    return out


def _lags_accepted(runs: list[RunRecord]) -> dict[str, tuple[str, ...]]:
    """The reasons of forced runs that accepted a data lag past the RPO (bcd.rpo.lag_accepted), per service."""
    out: dict[str, tuple[str, ...]] = {}
    for run in runs:
        if run.forced and "accepted: data lag" in run.reason:
            out[run.service] = (*out.get(run.service, ()), run.reason)
    return out


def _lag(track: ServiceTrack, rpo: float | None, accepted: tuple[str, ...], end: float, *,
         measured: bool) -> LagFinding:
    """The worst data lag of each site that journaled one (bcd.report.lags), and the service's (`measured`:
    a site of it names a data_lag)."""
    sites = sorted((lag.finish(site, end, rpo) for site, lag in track.lags.items()),
                   key=lambda site: -(site.worst or 0.0))
    worst = max((site.worst for site in sites if site.worst is not None), default=None)
    return LagFinding(rpo, samples=bool(sites), worst=worst, accepted=accepted, sites=tuple(sites), measured=measured)


def _service(config: Config, track: ServiceTrack, recoveries: list[Recovery], *, drills: tuple[Drill, ...],
             last_drill: float | None, lag: LagFinding) -> ServiceReport:
    service = config.services[track.name]
    objectives = config.objectives(track.name)
    moves = tuple(r for r in recoveries if r.kind is not RecoveryKind.DRILL)
    sites = tuple(
        SiteReport(name, Availability(dict(site.seconds)), site.standby_seconds, site.standby_not_up)
        for name, site in sorted(track.sites.items(), key=lambda item: item[0] != service.active)
    )
    return ServiceReport(
        name=track.name, description=service.description, rto=objectives.rto, rpo=objectives.rpo,
        runbook=service.failover.runbook if service.failover is not None else None,
        availability=track.availability(), sites=sites,
        incidents=tuple(_incident(start, end, site, worst, moves) for start, end, site, worst in track.incidents),
        recoveries=moves, drills=drills, last_drill=last_drill,
        lag=lag,
    )


def _incident(start: float, end: float | None, site: str, worst: str, moves: tuple[Recovery, ...]) -> Incident:
    """The incident, with the recovery that ended it: the last successful move away from its site started
    within it."""
    ended_by = [r for r in moves if r.from_site == site and r.result.value == "succeeded"
                and start <= r.timeline.started <= (end if end is not None else float("inf"))]
    return Incident(start, end, site, worst, ended_by[-1] if ended_by else None)


