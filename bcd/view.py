"""A read-only view of the estate, for the outputs and the web: what every service and site is, the runs,
the last observations, the events and, in a cluster, every vantage's view. They read through `EstateView`
and act through `bcd.operations`; they never import the engine or the runner.

`EngineView` is the engine's implementation. Its tables are handed out as they are (no copy): a reader
that needs them consistent across an await copies what it takes (the metrics renderer does).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bcd import impact, policy
from bcd.bus import Subscription
from bcd.config import Config, ProbeConfig
from bcd.drills.monitored import Monitored
from bcd.drills.records import DrillJournal
from bcd.engine import Engine, ServiceState
from bcd.events import Event
from bcd.health import SiteHealth
from bcd.journal import RunRecord, StepRecord
from bcd.model import Observation, RunKind
from bcd.plans.model import PlanRun
from bcd.plans.records import PlanJournal
from bcd.probes.perfdata import perfdata_entry
from bcd.recoveries import Recovery, RecoveryJournal
from bcd.site_loss import LostSite

__all__ = ["EngineView", "EstateView", "RunInProgress", "ServiceState", "objectives_json", "service_json"]


@dataclass(frozen=True, slots=True)
class RunInProgress:
    id: int
    kind: RunKind
    to_site: str
    waiting_step: str | None  # the step waiting for an operator's approval; None when it waits for none


class EstateView(Protocol):
    """What the outputs and the web read of the estate. Nothing here changes it."""

    @property
    def config(self) -> Config: ...

    @property
    def services(self) -> Mapping[str, ServiceState]: ...

    @property
    def sites(self) -> Mapping[tuple[str, str], SiteHealth]: ...

    @property
    def transitions(self) -> Mapping[tuple[str, str, str, str], int]:
        """Health transitions counted by (service, site, from, to)."""

    @property
    def lost_sites(self) -> Mapping[str, LostSite]:
        """The sites lost now (every service probed there down), by name."""

    def last_observations(self, service: str, site: str, probes: Iterable[ProbeConfig]) -> Iterator[Observation]:
        """The last observation of each of these probes of a site that has run."""

    def run(self, run_id: int) -> RunRecord | None: ...

    def recent_runs(self, service: str | None = None, limit: int = 50) -> list[RunRecord]: ...

    def run_steps(self, run_id: int) -> list[StepRecord]: ...

    def unacknowledged_run(self, service: str) -> RunRecord | None: ...

    def run_in_progress(self, service: str) -> RunInProgress | None: ...

    def verdict(self, service: str, request: policy.Request, active: str | None = None) -> policy.Verdict:
        """The policy's answer to `request` now, as if `active` (default: where it is) were the service's active
        site: a later leg of a drill, checked before the first. Starts nothing."""

    def recoveries(self, service: str, limit: int = 50) -> list[Recovery]:
        """The service's newest recoveries (runs that are not dry runs, as timelines), newest first."""

    def recoveries_after(self, run_id: int, limit: int = 500) -> list[Recovery]:
        """Every service's recoveries with a run id above `run_id`, oldest first."""

    def running(self) -> set[str] | None:
        """The services with a run in progress; None before the runner starts."""

    def waiting_approval(self, run_id: int) -> bool: ...

    def events(self, after: int = 0, service: str | None = None, limit: int = 100) -> list[Event]: ...

    def last_events(self, count: int, service: str | None = None) -> list[Event]: ...

    def subscription(self, name: str, size: int = 1000) -> AbstractAsyncContextManager[Subscription]:
        """Live events, from now on, while the context lasts."""

    def cluster_json(self, service: str) -> dict[str, Any]:
        """In a cluster, every vantage's view of the service and who holds its lock; {} alone."""

    def plan_run(self, run_id: int) -> PlanRun | None: ...

    def plan_runs(self, plan: str | None = None, limit: int = 50) -> list[PlanRun]:
        """Recent runs of recovery plans (of one plan), newest first."""

    def plan_results(self) -> dict[tuple[str, str], int]:
        """Ended plan runs counted by (plan, state)."""

    def drill_results(self) -> dict[tuple[str, str, str], int]:
        """Ended drills counted by (service, kind, result)."""

    def drill_successes(self) -> dict[str, float]:
        """service -> when its last drill succeeded."""

    def plan_drill_results(self) -> dict[tuple[str, str], int]:
        """Ended plan drills counted by (plan, result)."""

    def plan_drill_successes(self) -> dict[str, float]:
        """plan -> when its last drill succeeded."""

    def monitored_since(self) -> Mapping[str, float]:
        """service (configured) -> when bcd first monitored it, as the journal keeps it (bcd.drills.monitored)."""

    def plans_monitored_since(self) -> Mapping[str, float]:
        """plan (configured) -> when bcd first monitored it, as the journal keeps it (bcd.drills.monitored)."""


class EngineView:
    """`EstateView` over the engine's own tables."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._plans = PlanJournal(engine.journal)
        self._recoveries = RecoveryJournal(engine.journal, engine.runs)
        self._drills = DrillJournal(engine.journal)
        self._monitored = Monitored(engine.journal, engine.clock)

    @property
    def config(self) -> Config:
        return self._engine.config

    @property
    def services(self) -> Mapping[str, ServiceState]:
        return self._engine.services

    @property
    def sites(self) -> Mapping[tuple[str, str], SiteHealth]:
        return self._engine.sites

    @property
    def transitions(self) -> Mapping[tuple[str, str, str, str], int]:
        return self._engine.transitions

    @property
    def lost_sites(self) -> Mapping[str, LostSite]:
        return self._engine.site_loss.lost

    def last_observations(self, service: str, site: str, probes: Iterable[ProbeConfig]) -> Iterator[Observation]:
        return self._engine.last_observations(service, site, probes)

    def run(self, run_id: int) -> RunRecord | None:
        return self._engine.runs.get(run_id)

    def recent_runs(self, service: str | None = None, limit: int = 50) -> list[RunRecord]:
        return self._engine.runs.recent(service, limit)

    def run_steps(self, run_id: int) -> list[StepRecord]:
        return self._engine.runs.steps(run_id)

    def unacknowledged_run(self, service: str) -> RunRecord | None:
        return self._engine.runs.unacknowledged(service)

    def run_in_progress(self, service: str) -> RunInProgress | None:
        runner = self._engine.runner
        run = None if runner is None else runner.active.get(service)
        if run is None:
            return None
        waiting = None if run.approval is None else run.waiting_step
        return RunInProgress(run.id, run.request.kind, run.request.to_site, waiting)

    def verdict(self, service: str, request: policy.Request, active: str | None = None) -> policy.Verdict:
        snapshot = self._engine.snapshot(service)
        snapshot = snapshot if active is None else replace(snapshot, active=active)
        return policy.check_request(snapshot, request, self._engine.clock())

    def recoveries(self, service: str, limit: int = 50) -> list[Recovery]:
        return self._recoveries.recent(service, self.config.objectives(service).rto, limit)

    def recoveries_after(self, run_id: int, limit: int = 500) -> list[Recovery]:
        config = self.config
        return self._recoveries.since(
            run_id, lambda name: config.objectives(name).rto if name in config.services else None, limit)

    def running(self) -> set[str] | None:
        runner = self._engine.runner
        return None if runner is None else set(runner.active)

    def waiting_approval(self, run_id: int) -> bool:
        runner = self._engine.runner
        run = None if runner is None else runner.find(run_id)
        return run is not None and run.approval is not None

    def events(self, after: int = 0, service: str | None = None, limit: int = 100) -> list[Event]:
        return self._engine.journal.events(after=after, service=service, limit=limit)

    def last_events(self, count: int, service: str | None = None) -> list[Event]:
        return self._engine.journal.last_events(count, service)

    def subscription(self, name: str, size: int = 1000) -> AbstractAsyncContextManager[Subscription]:
        return self._engine.bus.subscription(name, size)

    def cluster_json(self, service: str) -> dict[str, Any]:
        cluster = self._engine.cluster
        return {} if cluster is None else cluster.service_json(service)

    def plan_run(self, run_id: int) -> PlanRun | None:
        return self._plans.get(run_id)

    def plan_runs(self, plan: str | None = None, limit: int = 50) -> list[PlanRun]:
        return self._plans.recent(plan, limit)

    def plan_results(self) -> dict[tuple[str, str], int]:
        return self._plans.results()

    def drill_results(self) -> dict[tuple[str, str, str], int]:
        return self._drills.results()

    def drill_successes(self) -> dict[str, float]:
        return self._drills.last_successes()

    def plan_drill_results(self) -> dict[tuple[str, str], int]:
        return self._drills.plan_results()

    def plan_drill_successes(self) -> dict[str, float]:
        return self._drills.plan_successes()

    def monitored_since(self) -> Mapping[str, float]:
        return self._monitored.since("service", self._engine.config.services)

    def plans_monitored_since(self) -> Mapping[str, float]:
        return self._monitored.since("plan", self._engine.config.plans)


def service_json(estate: EstateView, view: ServiceState) -> dict[str, Any]:
    """A service as the API, the status page and MQTT show it: its status, and every site's health and
    last observations, with `impacted_by` naming the dependencies whose being down there explains the site's
    (plus every vantage's view in a cluster)."""
    config = estate.config.services[view.name]
    graph = impact.GraphOf(estate.config.services)
    sites: dict[str, Any] = {}
    for site_name, site_config in config.sites.items():
        site = estate.sites[(view.name, site_name)]
        probes = {
            obs.key.probe: {"result": str(obs.result), "reason": obs.reason, "latency": obs.latency, "at": obs.at,
                            **perfdata_entry(obs.perfdata)}
            for obs in estate.last_observations(view.name, site_name, site_config.probes)
        }
        causes = impact.impacted_by(graph, estate.sites, view.name, site_name)
        sites[site_name] = {
            "state": str(site.state), "since": site.since, "reason": site.reason,
            "maintenance_until": site.maintenance_until, "probes": probes, "impacted_by": causes or None,
            "impacted_maintenance": impact.in_maintenance(estate.sites, causes, site_name) or None,
        }
    data = {
        "name": view.name, "description": config.description, "labels": config.labels,
        "status": str(view.status), "active": view.active, "home": config.active, "since": view.since,
        "reason": view.reason, "guard": view.guard and str(view.guard), "depends_on": list(config.depends_on),
        "sites": sites, "objectives": objectives_json(estate.config, view.name),
    }
    cluster = estate.cluster_json(view.name)  # every vantage's view side by side, and who holds the lock
    if "views" in cluster and estate.config.cluster is not None:
        _mark_stale(cluster["views"], estate.config.cluster.lease_ttl)
    data.update(cluster)
    return data


def objectives_json(config: Config, service: str) -> dict[str, float | None]:
    """The service's effective objectives in seconds (its own, else the defaults'); null: none."""
    objectives = config.objectives(service)
    return {"rto": objectives.rto, "rpo": objectives.rpo}


def _mark_stale(views: dict[str, Any], lease_ttl: float) -> None:
    """Each view says whether it is `stale`: not received again for longer than the lease (`lease_ttl`), so the
    vantage that published it may be gone, or this instance cut off from etcd (such views still count for
    quorum until twice the lease)."""
    for seen in views.values():
        seen["stale"] = seen["age"] > lease_ttl
        seen["lease_ttl"] = lease_ttl
