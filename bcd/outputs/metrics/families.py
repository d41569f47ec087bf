"""Every family of /metrics that goes through prometheus-client: the daemon-level ones, low in cardinality.

Each part of the daemon owns its figures (plain numbers it updates as it works: `SchedulerStats`, `RunStats`,
`MqttStats`, `AlertStats`, `JournalStats`, `Shortages`, `ConnectionStats`; the cluster link's `ClusterFigures`,
made at scrape time from the views it holds) and this module alone turns them into families at scrape time. The
per-probe, per-site and per-service families are rendered by hand in `bcd.outputs.metrics.text`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from bcd import __version__
from bcd.cluster.figures import ClusterFigures
from bcd.journal.writer import JournalStats
from bcd.mqtt.stats import MqttStats
from bcd.outputs.alert_rules import ALERTNAMES
from bcd.outputs.alerts.delivery import AlertStats
from bcd.outputs.shortages import Shortages
from bcd.probes.base import LOCAL_SHORTAGES
from bcd.scheduler import SchedulerStats
from bcd.stats import Histogram
from bcd.web.limits import ConnectionStats


@dataclass(slots=True)
class ReloadState:
    successful: bool = True
    success_timestamp: float = 0.0


class DaemonCollector(Collector):
    """Daemon-level metrics (low cardinality) through prometheus-client."""

    def __init__(self, reload: ReloadState) -> None:
        self._reload = reload

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        build = GaugeMetricFamily("bcd_build_info", "bcd version.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        yield GaugeMetricFamily(
            "bcd_config_last_reload_successful", "Whether the last config (re)load succeeded.",
            value=int(self._reload.successful),
        )
        yield GaugeMetricFamily(
            "bcd_config_last_reload_success_timestamp_seconds", "When the config was last loaded successfully.",
            value=self._reload.success_timestamp,
        )


class SchedulerCollector(Collector):
    """`bcd_scheduler_*`: lateness, runs in flight, probes scheduled, runs skipped, early runs and site bursts."""

    def __init__(self, stats: SchedulerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        stats = self._stats
        lateness = stats.lateness
        buckets = [(repr(b), c) for b, c in zip(lateness.bounds, lateness.cumulative(), strict=True)]
        yield HistogramMetricFamily(
            "bcd_scheduler_lateness_seconds", "How late probe runs started after their due time.",
            buckets=[*buckets, ("+Inf", lateness.count)], sum_value=lateness.total,
        )
        yield GaugeMetricFamily("bcd_scheduler_probes_in_flight", "Probe runs in progress.", value=stats.in_flight)
        yield GaugeMetricFamily("bcd_scheduler_probes", "Probes scheduled.", value=stats.probes)
        yield CounterMetricFamily(
            "bcd_scheduler_skipped_probes", "Probe runs skipped because the previous run was still going or late.",
            value=stats.skipped,
        )
        yield CounterMetricFamily(
            "bcd_scheduler_fast_runs", "Probe runs started ahead of their schedule: fast confirmation and site "
            "re-probes.", value=stats.fast_runs,
        )
        bursts = CounterMetricFamily(
            "bcd_scheduler_bursts", "Times every probe of a site was run at once (correlated failures there).",
            labels=["site"],
        )
        for site, count in sorted(stats.bursts.items()):
            bursts.add_metric([site], count)
        yield bursts


def _histogram(name: str, help_text: str, label_names: list[str],
               items: Iterable[tuple[tuple[str, ...], Histogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=label_names)
    for label_values, h in items:
        buckets = [(repr(b), c) for b, c in zip(h.bounds, h.cumulative(), strict=True)]
        family.add_metric(list(label_values), [*buckets, ("+Inf", h.count)], h.total)
    return family


class RunFigures(Protocol):
    """What the runner counts for /metrics (`bcd.runbooks.runner.RunStats`)."""

    @property
    def runs(self) -> Mapping[tuple[str, str, str, str], int]: ...  # service, runbook, trigger, result

    @property
    def durations(self) -> Mapping[tuple[str, str], Histogram]: ...

    @property
    def step_durations(self) -> Mapping[tuple[str, str, str], Histogram]: ...

    @property
    def last_failover(self) -> Mapping[str, float]: ...

    @property
    def detection(self) -> Mapping[str, float]: ...

    @property
    def total(self) -> Mapping[str, float]: ...


class RunnerCollector(Collector):
    """Runbook and failover metrics: the figures a recovery-time objective is measured by."""

    def __init__(self, stats: RunFigures) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        stats = self._stats
        runs = CounterMetricFamily("bcd_runbook_runs", "Runbook runs by result.",
                                   labels=["service", "runbook", "trigger", "result"])
        for key, count in stats.runs.items():
            runs.add_metric(list(key), count)
        yield runs
        yield _histogram("bcd_runbook_duration_seconds", "Duration of runbook runs.", ["service", "runbook"],
                         stats.durations.items())
        yield _histogram("bcd_runbook_step_duration_seconds", "Duration of runbook steps.",
                         ["service", "runbook", "step"], stats.step_durations.items())
        yield from _per_service(
            ("bcd_failover_last_timestamp_seconds", "When the last successful run ended.", stats.last_failover),
            ("bcd_failover_detection_seconds", "Last failover: first failing observation to run start.",
             stats.detection),
            ("bcd_failover_total_seconds", "Last failover: first failing observation to target verified healthy.",
             stats.total),
        )


def _per_service(*tables: tuple[str, str, Mapping[str, float]]) -> Iterator[GaugeMetricFamily]:
    for name, help_text, values in tables:
        family = GaugeMetricFamily(name, help_text, labels=["service"])
        for service, value in values.items():
            family.add_metric([service], value)
        yield family


class MqttCollector(Collector):
    """`bcd_mqtt_*`: rendered only while MQTT is configured. `bcd_mqtt_connected` is 1 while the session
    runs whole: connected, publishing, and reading commands."""

    def __init__(self, stats: MqttStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats
        if not stats.enabled:
            return
        yield GaugeMetricFamily("bcd_mqtt_connected", "Whether bcd is connected to its MQTT broker.",
                                value=int(stats.connected))
        yield CounterMetricFamily("bcd_mqtt_dropped_messages", "Events dropped before they could be published.",
                                  value=stats.dropped)
        yield CounterMetricFamily("bcd_mqtt_published_messages", "Messages published to the broker.",
                                  value=stats.published)
        yield CounterMetricFamily("bcd_mqtt_dropped_replies", "Replies to commands dropped, not published.",
                                  value=stats.dropped_replies)
        commands = CounterMetricFamily("bcd_mqtt_commands", "MQTT commands by result.", labels=["result"])
        for result in ("accepted", "refused", "busy", "dropped"):
            commands.add_metric([result], stats.commands[result])
        yield commands


class AlertCollector(Collector):
    """`bcd_alerts_firing{alertname}`, `bcd_alerts_suppressed{alertname}`, `bcd_alert_notifications_total{receiver,
    result}`, and the drops."""

    def __init__(self, stats: AlertStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats
        firing = GaugeMetricFamily("bcd_alerts_firing", "Alerts firing now, by alertname.", labels=["alertname"])
        for name in ALERTNAMES:
            firing.add_metric([name], stats.firing[name])
        yield firing
        suppressed = GaugeMetricFamily("bcd_alerts_suppressed", "Alerts held now because a dependency's own alert "
                                       "explains them (impacted_by): shown, not sent.", labels=["alertname"])
        for name in ALERTNAMES:
            suppressed.add_metric([name], stats.suppressed[name])
        yield suppressed
        notifications = CounterMetricFamily(
            "bcd_alert_notifications", "Deliveries to alert receivers (after retries), by result.",
            labels=["receiver", "result"],
        )
        dropped = CounterMetricFamily(
            "bcd_alert_notifications_dropped", "Alert changes dropped because a receiver's backlog was full.",
            labels=["receiver"],
        )
        for label in sorted(stats.receivers | {receiver for receiver, _ in stats.notifications}):
            for result in ("success", "failure"):
                notifications.add_metric([label, result], stats.notifications[(label, result)])
            dropped.add_metric([label], stats.dropped[label])
        yield notifications
        yield dropped


class JournalCollector(Collector):
    """`bcd_journal_write_errors_total`, `bcd_journal_queued_entries`, `bcd_journal_dropped_total`,
    `bcd_journal_writable`."""

    def __init__(self, stats: JournalStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats
        yield CounterMetricFamily("bcd_journal_write_errors", "Journal writes that failed (each retry counts).",
                                  value=stats.write_errors)
        yield GaugeMetricFamily("bcd_journal_queued_entries",
                                "Entries (events, state rows, run records) waiting to be written to the journal.",
                                value=stats.queued)
        yield CounterMetricFamily("bcd_journal_dropped", "Events never journaled: the queue was full.",
                                  value=stats.dropped)
        yield GaugeMetricFamily("bcd_journal_writable", "1 while the journal can be written, 0 while it cannot.",
                                value=int(stats.writable))


class ShortageCollector(Collector):
    """`bcd_probe_internal_errors_total{reason}`, every known reason shown from the start."""

    def __init__(self, shortages: Shortages) -> None:
        self._shortages = shortages

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("bcd_probe_internal_errors",
                                     "Probe runs bcd could not make for a local shortage (not the target's fault).",
                                     labels=["reason"])
        counts = self._shortages.counts
        for reason in sorted({*LOCAL_SHORTAGES.values(), *counts}):
            family.add_metric([reason], counts[reason])
        yield family


class HttpCollector(Collector):
    """`bcd_http_connections` (open now), `bcd_http_connections_limit`, `bcd_http_connections_refused_total`."""

    def __init__(self, stats: ConnectionStats) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily("bcd_http_connections", "Open connections to bcd's HTTP server.",
                                value=self._stats.open)
        yield GaugeMetricFamily("bcd_http_connections_limit", "Most connections the HTTP server holds at once.",
                                value=self._stats.cap)
        yield CounterMetricFamily("bcd_http_connections_refused",
                                  "Connections answered 503 and closed because the server was at its limit.",
                                  value=self._stats.refused)


class ClusterCollector(Collector):
    """bcd_cluster_members, bcd_cluster_coordination_up, bcd_vantage_view_age_seconds, bcd_site_votes,
    bcd_lock_held: from the cluster link's figures (`bcd.cluster.ClusterLink.figures`)."""

    def __init__(self, figures: Callable[[], ClusterFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterable[GaugeMetricFamily]:
        figures = self._figures()
        members = GaugeMetricFamily("bcd_cluster_members", "Live vantages whose view this instance sees.",
                                    labels=["vantage"])
        ages = GaugeMetricFamily("bcd_vantage_view_age_seconds", "Seconds since each vantage's view was written.",
                                 labels=["vantage"])
        for vantage, age in figures.members.items():
            members.add_metric([vantage], 1)
            ages.add_metric([vantage], age)
        yield members
        yield GaugeMetricFamily("bcd_cluster_coordination_up", "Whether coordination (etcd and our lease) is up.",
                                value=int(figures.available))
        yield ages
        votes = GaugeMetricFamily("bcd_site_votes", "Live vantages seeing the site in each state.",
                                  labels=["service", "site", "state"])
        for (service, site), counts in figures.votes.items():
            for state, count in counts.items():
                votes.add_metric([service, site, str(state)], count)
        yield votes
        held = GaugeMetricFamily("bcd_lock_held", "Whether this instance holds the service's run lock.",
                                 labels=["service"])
        for service, holds in figures.held.items():
            held.add_metric([service], int(holds))
        yield held
