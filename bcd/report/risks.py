"""The risks a continuity report lists: what would make the plan fail, or cannot show that it works."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

from bcd.config import Config
from bcd.report.model import Period, Risk, ServiceReport, SiteLag
from bcd.report.text import duration, percent

STANDBY_NOT_UP = 0.01  # a standby not `up` for more of its observed standby time than this is a risk


def risks(config: Config, services: Sequence[ServiceReport], period: Period, drills_max_age: float) -> Iterator[Risk]:
    """Per service, in order: drills, runbook, objectives, standbys, objectives missed, data lag over the RPO."""
    for service in services:
        yield from _drills(service, period, drills_max_age)
        if service.runbook is None:
            yield Risk(service.name, "no_runbook", "no failover runbook: a failure can only be handled by hand")
        missing = [name for name, value in (("RTO", service.rto), ("RPO", service.rpo)) if value is None]
        if missing:
            yield Risk(service.name, "no_objective", f"no {' and no '.join(missing)}: recovery cannot be measured "
                                                     "against an objective")
        for site in service.sites:
            ratio = site.standby_not_up_ratio
            if ratio is not None and ratio > STANDBY_NOT_UP:
                yield Risk(service.name, "standby_not_up",
                           f"standby {site.site} was not up for {percent(ratio, 2)} of its standby time "
                           f"({duration(site.standby_not_up)}): a failover could not have gone there")
        for recovery in service.rto_missed:
            assert recovery.timeline.total is not None and recovery.rto is not None
            yield Risk(service.name, "objective_missed",
                       f"{recovery.kind.value} run {recovery.run_id} took {duration(recovery.timeline.total)}, "
                       f"over the RTO of {duration(recovery.rto)}")
        for lagging in service.lag.exceeded:
            yield Risk(service.name, "lag_over_rpo", _lag_text(lagging, service.rpo))
        for reason in service.lag.accepted:
            yield Risk(service.name, "objective_missed", f"a forced move accepted data loss past the RPO: {reason}")


def _drills(service: ServiceReport, period: Period, max_age: float) -> Iterator[Risk]:
    if service.last_drill is None:
        outcomes = Counter(drill.result or "not ended" for drill in service.drills)
        text = ("never drilled: recovery has not been rehearsed" if not service.drills else
                f"no drill has succeeded yet (in the period: {', '.join(f'{n} {r}' for r, n in outcomes.items())})")
        yield Risk(service.name, "never_drilled", text)
    elif period.end - service.last_drill > max_age:
        yield Risk(service.name, "drill_overdue",
                   f"last drilled {duration(period.end - service.last_drill)} before the period's end, "
                   f"longer ago than drills_max_age ({duration(max_age)})")


def _lag_text(site: SiteLag, rpo: float | None) -> str:
    worst = f"reached {duration(site.worst)}" if site.worst is not None else "was over it"
    over = f", over it for {duration(site.over_seconds)}" if site.over_seconds > 0 else ""
    return (f"data lag of {site.site} {worst} against an RPO of {duration(rpo)}{over}: a failover there would "
            "have lost more data than promised")
