"""/metrics: every family the daemon exposes, rendered in this one package at scrape time.

- `text`: the families with a series per probe, site or service, rendered by hand in the text format (the
  fast path: tens of thousands of lines a scrape; prometheus-client's sample path is several µs a line).
- `families`: every other family, through prometheus-client's registry and text encoder.

Each part of the daemon owns its figures as plain numbers and exposes them read-only; only the rendering
lives here. Nothing is registered per label set, so a service or probe removed by a reload simply stops
being rendered.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from bcd.outputs.metrics.data_lag import DataLagCollector
from bcd.outputs.metrics.drills import DrillCollector
from bcd.outputs.metrics.families import (
    AlertCollector,
    ClusterCollector,
    DaemonCollector,
    HttpCollector,
    JournalCollector,
    MqttCollector,
    ReloadState,
    RunFigures,
    RunnerCollector,
    SchedulerCollector,
    ShortageCollector,
)
from bcd.outputs.metrics.plans import PlanCollector, PlanMembers
from bcd.outputs.metrics.recoveries import RecoveryCollector
from bcd.outputs.metrics.text import Labels, ProbeMetrics, escape, labels, render_estate, render_probes, render_runner
from bcd.view import EstateView

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

__all__ = [
    "CONTENT_TYPE", "AlertCollector", "ClusterCollector", "DaemonCollector", "HttpCollector", "JournalCollector",
    "Metrics", "MqttCollector", "ProbeMetrics", "ReloadState", "RunFigures", "RunnerCollector", "SchedulerCollector",
    "ShortageCollector",
    "escape", "labels",
]


class Metrics:
    """Everything `/metrics` shows."""

    def __init__(self, estate: EstateView) -> None:
        self.probes = ProbeMetrics()
        self.reload = ReloadState()
        self.labels = Labels()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(self.reload))
        self.registry.register(PlanCollector(estate))
        self.registry.register(DrillCollector(estate))
        self.registry.register(DataLagCollector(estate))
        self.recoveries = RecoveryCollector(estate)
        self.registry.register(self.recoveries)
        self.plan_members = PlanMembers(estate)
        self._estate = estate
        self.scrapes = 0  # read by the daemon, which trims the C heap after scrapes (bcd.heap)

    def register(self, collector: Collector) -> None:
        self.registry.register(collector)

    def parts(self) -> Iterator[str]:
        """The exposition in pieces of at most CHUNK series each, so that a server can let the event loop
        run between them (probes due during a large scrape then start on time)."""
        self.scrapes += 1
        self.labels.follow(self._estate)
        runner, estate = render_runner(self._estate, self.labels), render_estate(self._estate, self.labels)
        yield generate_latest(self.registry).decode()
        yield from self.recoveries.parts()
        yield from self.plan_members.parts()
        yield from runner
        yield from estate
        yield from render_probes(self.probes)

    def render(self) -> bytes:
        return "".join(self.parts()).encode()
