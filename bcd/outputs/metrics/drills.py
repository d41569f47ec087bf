"""`bcd_drills_total{service,kind,result}`, `bcd_drill_last_success_timestamp_seconds{service}` and
`bcd_drills_max_age_seconds`: what BcdDrillFailed and BcdDrillOverdue read, from the journal at scrape time.

A scheduled drill's counts are shown at 0 before its first end. The last success is shown for every service
that has a scheduled drill or has ever been drilled (0: never succeeded); a service neither scheduled nor ever
drilled has no series (the continuity report lists those). `bcd_service_first_seen_timestamp_seconds{service}`
(its oldest event in the journal) is what BcdDrillOverdue counts a service never drilled successfully from: it
fires drills_max_age after bcd first monitored it, not at once on a new install, and a restart does not reset it.
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
            (drill.service, drill.kind, result): 0 for drill in config.drills.values() for result in RESULTS}
        counts.update(self._estate.drill_results())  # scheduled drills at 0 before their first end: increase() sees it
        for (service, kind, result), count in sorted(counts.items()):
            if service in config.services:
                total.add_metric([service, kind, result], count)
        yield total
        successes = self._estate.drill_successes()
        last = GaugeMetricFamily("bcd_drill_last_success_timestamp_seconds", "When the service's last drill "
                                 "succeeded (0: never), for services drilled or with a scheduled drill.",
                                 labels=["service"])
        drilled = set(successes) | {drill.service for drill in config.drills.values()}
        for service in sorted(drilled & set(config.services)):
            last.add_metric([service], successes.get(service, 0.0))
        yield last
        first = GaugeMetricFamily("bcd_service_first_seen_timestamp_seconds", "When bcd first monitored the "
                                  "service: its oldest event in the journal (BcdDrillOverdue counts a service never "
                                  "drilled from then).", labels=["service"])
        for service, at in sorted(self._estate.first_seen().items()):
            first.add_metric([service], at)
        yield first
        yield GaugeMetricFamily("bcd_drills_max_age_seconds", "defaults.drills_max_age: a service not drilled "
                                "this long is overdue.", value=config.defaults.drills_max_age)
