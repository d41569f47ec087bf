"""`bcd_recovery_seconds{service,kind}`, `bcd_recovery_objective_missed_total{service,kind}` and
`bcd_objective_seconds{service,objective}`: recoveries measured against their objectives.

Recoveries are read from the estate view (the journal) at scrape time: each one that has finished since the
daemon started is counted once, whichever scrape first sees it finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from bcd.config import Config
from bcd.recoveries import Recovery, RecoveryKind
from bcd.stats import Histogram
from bcd.view import EstateView

RECOVERY_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0)


class RecoveryCollector(Collector):
    """Counts each recovery once it has finished; those before the daemon started are history (the API)."""

    def __init__(self, estate: EstateView) -> None:
        self._estate = estate
        newest = estate.recent_runs(None, 1)
        self._settled = newest[0].id if newest else 0  # every run up to this id is counted (or predates us)
        self._counted: set[int] = set()  # finished runs above it, counted while an older one still runs
        self.seconds: dict[tuple[str, str], Histogram] = {}
        self.missed: Counter[tuple[str, str]] = Counter()
        self._config: Config | None = None
        self._effective: list[tuple[str, float | None, float | None]] = []

    def follow(self) -> None:
        """Count the recoveries finished since the last call."""
        pending = False
        for recovery in self._estate.recoveries_after(self._settled):
            if recovery.finished and recovery.run_id not in self._counted:
                self._count(recovery)
                self._counted.add(recovery.run_id)
            pending = pending or not recovery.finished
            if not pending:
                self._settled = recovery.run_id
        self._counted = {run_id for run_id in self._counted if run_id > self._settled}

    def _count(self, recovery: Recovery) -> None:
        key = (recovery.service, recovery.kind.value)
        total = recovery.timeline.total
        if total is not None:
            self.seconds.setdefault(key, Histogram(RECOVERY_BUCKETS)).observe(total)
        if recovery.rto_met is False:
            self.missed[key] += 1

    def _objectives(self, config: Config) -> list[tuple[str, float | None, float | None]]:
        """(service, rto, rpo) of the services with an objective, worked out once per config (a large estate
        without objectives costs a scrape nothing)."""
        if config is not self._config:
            effective = ((name, config.objectives(name)) for name in sorted(config.services))
            self._effective = [(name, o.rto, o.rpo) for name, o in effective if o.rto is not None or o.rpo is not None]
            self._config = config
        return self._effective

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        self.follow()
        config = self._estate.config
        services = set(config.services)
        seconds = HistogramMetricFamily(
            "bcd_recovery_seconds", "Verified recoveries: first failing observation (else the decision) to target "
            "verified healthy.", labels=["service", "kind"])
        for (service, kind), h in sorted(self.seconds.items()):
            if service in services:
                buckets = [(repr(b), c) for b, c in zip(h.bounds, h.cumulative(), strict=True)]
                seconds.add_metric([service, kind], [*buckets, ("+Inf", h.count)], h.total)
        yield seconds
        missed = CounterMetricFamily("bcd_recovery_objective_missed", "Verified recoveries that took longer than "
                                     "the service's RTO.", labels=["service", "kind"])
        objectives = GaugeMetricFamily("bcd_objective_seconds", "The service's recovery objectives (rto, rpo).",
                                       labels=["service", "objective"])
        for service, rto, rpo in self._objectives(config):
            for name, value in (("rto", rto), ("rpo", rpo)):
                if value is not None:
                    objectives.add_metric([service, name], value)
            if rto is not None:  # at 0 before the first miss, so that increase() sees it
                for kind in RecoveryKind:
                    missed.add_metric([service, kind.value], self.missed[(service, kind.value)])
        yield missed
        yield objectives
