"""`bcd_drills_total{service,kind,result}`, `bcd_drill_last_success_timestamp_seconds{service}`,
`bcd_plan_drills_total{plan,result}`, `bcd_plan_drill_last_success_timestamp_seconds{plan}` and
`bcd_drills_max_age_seconds`: what BcdDrillFailed, BcdPlanDrillFailed and BcdDrillOverdue read, from the journal at
scrape time.

A scheduled drill's counts are shown at 0 before its first end. The last success is shown for every service (plan)
that has a scheduled drill or has ever been drilled (0: never succeeded). For a service never drilled successfully,
BcdDrillOverdue reads `bcd_service_monitored_since_timestamp_seconds` instead (one line per service, rendered with
the estate's families in `text`), and BcdPlanDrillOverdue `bcd_plan_monitored_since_timestamp_seconds` (here).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bcd.view import EstateView

RESULTS = ("succeeded", "failed", "aborted", "interrupted")


class DrillCollector(Collector):
    def __init__(self, estate: EstateView) -> None:
        self._estate = estate

    def collect(self) -> Iterable[Metric]:
        config = self._estate.config
        total = CounterMetricFamily("bcd_drills", "DR drills ended, by result (succeeded, failed, aborted, "
                                    "interrupted), as the journal keeps them.", labels=["service", "kind", "result"])
        counts: dict[tuple[str, str, str], int] = {
            (drill.service, drill.kind, result): 0 for drill in config.drills.values() if drill.service is not None
            for result in RESULTS}
        counts.update(self._estate.drill_results())  # scheduled drills at 0 before their first end: increase() sees it
        for (service, kind, result), count in sorted(counts.items()):
            if service in config.services:
                total.add_metric([service, kind, result], count)
        yield total
        yield _last("bcd_drill_last_success_timestamp_seconds", "service", self._estate.drill_successes(),
                    {drill.service for drill in config.drills.values()}, set(config.services))
        yield from self._plans()
        yield GaugeMetricFamily("bcd_drills_max_age_seconds", "defaults.drills_max_age: a service not drilled "
                                "this long is overdue.", value=config.defaults.drills_max_age)

    def _plans(self) -> Iterable[Metric]:
        """The same two for drills of recovery plans (`bcd drill --plan`, `plan_drill`, `drills: {plan: …}`)."""
        config = self._estate.config
        total = CounterMetricFamily("bcd_plan_drills", "Drills of recovery plans ended, by result (succeeded, failed, "
                                    "aborted, interrupted), as the journal keeps them.", labels=["plan", "result"])
        counts = {(drill.plan, result): 0 for drill in config.drills.values() if drill.plan is not None
                  for result in RESULTS}
        counts.update(self._estate.plan_drill_results())
        for (plan, result), count in sorted(counts.items()):
            if plan in config.plans:
                total.add_metric([plan, result], count)
        yield total
        yield _last("bcd_plan_drill_last_success_timestamp_seconds", "plan", self._estate.plan_drill_successes(),
                    {drill.plan for drill in config.drills.values()}, set(config.plans))
        since = GaugeMetricFamily("bcd_plan_monitored_since_timestamp_seconds", "When bcd first monitored the recovery "
                                  "plan, as its journal keeps it (BcdPlanDrillOverdue counts a plan never drilled "
                                  "successfully from then).", labels=["plan"])
        monitored = self._estate.plans_monitored_since()
        for plan in sorted(config.plans):
            if plan in monitored:
                since.add_metric([plan], monitored[plan])
        yield since


def _last(name: str, label: str, successes: dict[str, float], scheduled: set[str | None], known: set[str]
          ) -> GaugeMetricFamily:
    """When each drilled or scheduled `label` (that the config still has) last succeeded (0: never)."""
    last = GaugeMetricFamily(name, f"When the {label}'s last drill succeeded (0: never), for each {label} drilled or "
                             "with a scheduled drill.", labels=[label])
    for key in sorted((set(successes) | {s for s in scheduled if s is not None}) & known):
        last.add_metric([key], successes.get(key, 0.0))
    return last
