"""`bcd_recovery_seconds{service,kind}`, `bcd_recovery_objective_missed_total{service,kind}` and
`bcd_objective_seconds{service,objective}`: recoveries measured against their objectives.

Recoveries are read from the estate view (the journal) at scrape time: each one that has finished since the
daemon started is counted once, whichever scrape first sees it finished. The histogram (a series per service
and kind that has recovered) goes through prometheus-client; the two per-service families are rendered by
hand and kept as text until the config or a count changes (a large estate with objectives has a line per
service and objective: prometheus-client's sample path would cost a second a scrape at 12,000 services).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from bcd.config import Config
from bcd.outputs.metrics.text import chunks, labels
from bcd.recoveries import Recovery, RecoveryKind
from bcd.stats import Histogram
from bcd.view import EstateView

RECOVERY_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 86400.0)
MISSED_HEAD = ("# HELP bcd_recovery_objective_missed_total Verified recoveries that took longer than the "
               "service's RTO.\n# TYPE bcd_recovery_objective_missed_total counter\n")
# the kinds shown at 0 before their first miss (a drill's first miss is a new series: the rule catches those too)
DECLARED = (RecoveryKind.FAILOVER.value, RecoveryKind.FAILBACK.value)
OBJECTIVES_HEAD = ("# HELP bcd_objective_seconds The service's recovery objectives (rto, rpo).\n"
                   "# TYPE bcd_objective_seconds gauge\n")


class RecoveryCollector(Collector):
    """Counts each recovery once it has finished; those before the daemon started are history (the API)."""

    def __init__(self, estate: EstateView) -> None:
        self._estate = estate
        newest = estate.recent_runs(None, 1)
        self._settled = newest[0].id if newest else 0  # every run up to this id is counted (or predates us)
        self._counted: set[int] = set()  # finished runs above it, counted while an older one still runs
        self.seconds: dict[tuple[str, str], Histogram] = {}
        self.missed: Counter[tuple[str, str]] = Counter()
        self._text: tuple[Config, int, str] | None = None  # what parts() rendered, for this config and count

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

    def collect(self) -> Iterable[HistogramMetricFamily]:
        self.follow()
        services = self._estate.config.services
        seconds = HistogramMetricFamily(
            "bcd_recovery_seconds", "Verified recoveries: first failing observation (else the decision) to target "
            "verified healthy.", labels=["service", "kind"])
        for (service, kind), h in sorted(self.seconds.items()):
            if service in services:
                buckets = [(repr(b), c) for b, c in zip(h.bounds, h.cumulative(), strict=True)]
                seconds.add_metric([service, kind], [*buckets, ("+Inf", h.count)], h.total)
        yield seconds

    def parts(self) -> Iterator[str]:
        """`bcd_recovery_objective_missed_total` (at 0 for every service with an RTO before its first miss, so
        that increase() sees it) and `bcd_objective_seconds`, in the text format: in pieces of CHUNK services
        the first time (the event loop runs between them), then as kept until the config or a count changes."""
        config, misses = self._estate.config, sum(self.missed.values())
        if self._text is not None and self._text[0] is config and self._text[1] == misses:
            yield self._text[2]
            return
        missed, objectives = [MISSED_HEAD], [OBJECTIVES_HEAD]
        for part in chunks(sorted(config.services)):
            start = len(missed)
            for service in part:
                self._render(config, service, missed, objectives)
            yield "".join(missed[start:])
        yield "".join(objectives)
        self._text = (config, misses, "".join(missed + objectives))

    def _render(self, config: Config, service: str, missed: list[str], objectives: list[str]) -> None:
        effective = config.objectives(service)
        if effective.rto is None and effective.rpo is None:
            return
        label = labels(service=service)
        for name, value in (("rto", effective.rto), ("rpo", effective.rpo)):
            if value is not None:
                objectives.append(f'bcd_objective_seconds{{{label},objective="{name}"}} {value!r}\n')
        if effective.rto is not None:
            missed.extend(f'bcd_recovery_objective_missed_total{{{label},kind="{kind}"}} '
                          f'{self.missed[(service, kind)]}\n' for kind in DECLARED)
