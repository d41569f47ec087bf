"""The alert sender: derives the alerts from the live state, diffs, and hands every change to the receivers of
the `registry.py` table (see the package's docstring)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog

from bcd import __version__, dependencies, impact
from bcd.bus import Bus, Subscription
from bcd.config import Config
from bcd.health import SiteHealth
from bcd.outputs.alert_rules import (
    Alert,
    AlertSnapshot,
    Certificate,
    FailedRun,
    ServiceFacts,
    WaitingRun,
    active_alerts,
    site_alerts,
)
from bcd.outputs.alerts.delivery import AlertStats, Key, ReceiverKind, Target
from bcd.outputs.alerts.registry import RECEIVERS
from bcd.view import EstateView

FULL_EVERY = 30.0
"""Re-derive every service this often even without events (certificates crossing cert_expiry_warn); between
times only the services named by bus events are looked at again."""
CHUNK = 200
"""Services derived per slice of a full pass (the event loop runs other work between slices)."""
EVALUATE_GAP = 0.05
"""At most one evaluation per gap: a burst of events costs one evaluation, not one each."""
RUN_EVENTS = frozenset({"run_finished", "acknowledged"})
ESTATE = ""
"""The key of the alerts about the estate rather than one service (BcdSiteLost), where the services' names go."""

log = structlog.get_logger("bcd.alerts")


def build_snapshot(estate: EstateView, names: Iterable[str], failed_run: Callable[[str], FailedRun | None],
                   ) -> AlertSnapshot:
    """What the alert rules look at for the services `names`, read from the estate view (and, through `failed_run`,
    the run journal). Costs O(sites + probes) of those services only."""
    config = estate.config
    graph = impact.GraphOf(config.services)
    services = []
    for name in names:
        service, view = config.services.get(name), estate.services.get(name)
        if service is None or view is None:
            continue
        sites: dict[str, SiteHealth] = {}
        certificates: list[Certificate] = []
        for site_name, site in service.sites.items():
            health = estate.sites.get((name, site_name))
            if health is not None:
                sites[site_name] = health
            for obs in estate.last_observations(name, site_name, site.probes):
                if obs.cert_expiry is not None:
                    certificates.append(Certificate(site_name, obs.key.probe, obs.cert_expiry))
        run = estate.run_in_progress(name)
        waiting = None if run is None or run.waiting_step is None else WaitingRun(
            run.id, str(run.kind), run.to_site, run.waiting_step)
        services.append(ServiceFacts(
            name=name, status=view.status, active=view.active, since=view.since, reason=view.reason,
            guard=view.guard, labels=service.labels, sites=sites, failed_run=failed_run(name),
            waiting_run=waiting, certificates=tuple(certificates),
            impacted={site: cause for site in sites if (cause := impact.impacted_by(graph, estate.sites, name, site))},
            blocked_by=impact.blocked_by(graph, estate.services, name),
        ))
    return AlertSnapshot(config.instance, services, config.alerts.cert_expiry_warn, config.alerts.runbook_url,
                         tuple(estate.lost_sites.values()))


class AlertSender:
    """Derives the alerts and hands every change to the receivers. `start()`, `configure()` on reload,
    `await stop()`; `evaluate()` re-derives now."""

    def __init__(self, estate: EstateView, bus: Bus, config: Config,
                 clock: Callable[[], float] = time.time) -> None:
        self._estate = estate
        self._bus = bus
        self.config = config
        self.clock = clock
        self.firing: dict[Key, Alert] = {}
        self._by_service: dict[str, dict[Key, Alert]] = {}
        self.suppressed: dict[str, dict[Key, Alert]] = {}  # by service: alerts explained by a dependency, not sent
        self._dependents: dict[str, tuple[str, ...]] = {}
        self._dirty: set[str] = set()
        self._full = True
        self.stats = AlertStats()
        self.targets: dict[tuple[str, str], Target] = {}
        self._target_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._subscription: Subscription | None = None
        self._wake = asyncio.Event()
        self._failed_runs: dict[str, FailedRun | None] = {}
        self._dropped_seen = 0
        self._listen_address = config.server.listen  # a reload does not move the server either
        self.configure(config)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to the bus and start evaluating and delivering (needs a running loop)."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),  # each POST has its own deadline
            connector=aiohttp.TCPConnector(limit=32),
        )
        self._subscription = self._bus.subscribe("alerts", 1000)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(self._subscription)), loop.create_task(self._evaluate_loop())]
        for key in self.targets:
            self._start_target(key)
        self._wake.set()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._target_tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._target_tasks = [], {}
        if self._subscription is not None:
            self._bus.unsubscribe(self._subscription)
            self._subscription = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def configure(self, config: Config) -> None:
        """Adopt a (re)loaded config: receivers added, removed or updated; secrets read again."""
        self.config = config
        self._dependents = {name: tuple(sorted(needed_by)) for name, needed_by
                            in dependencies.dependents(impact.GraphOf(config.services)).items()}
        wanted: dict[tuple[str, str], tuple[ReceiverKind[Any], Any]] = {
            (kind.name, url): (kind, settings)
            for kind in RECEIVERS for url, settings in kind.receivers(getattr(config.alerts, kind.key))
        }
        for key in set(self.targets) - set(wanted):
            del self.targets[key]
            task = self._target_tasks.pop(key, None)
            if task is not None:
                task.cancel()
        for key, (kind, settings) in wanted.items():
            target = self.targets.get(key)
            if target is not None:
                target.update(settings)
            else:
                self._add_target(key, kind.build(key[1], settings, self))
        self.stats.retain({target.label for target in self.targets.values()})
        self._failed_runs.clear()
        self._full = True
        self._wake.set()

    def _add_target(self, key: tuple[str, str], target: Target) -> None:
        target.joined(list(self.firing.values()))
        self.targets[key] = target
        if self._session is not None:
            self._start_target(key)

    def _start_target(self, key: tuple[str, str]) -> None:
        assert self._session is not None
        target = self.targets[key]
        task = asyncio.get_running_loop().create_task(self._guard(target.label, target.run, self._session))
        self._target_tasks[key] = task

    @staticmethod
    async def _guard(label: str, run: Callable[[aiohttp.ClientSession], Awaitable[None]],
                     session: aiohttp.ClientSession) -> None:
        """Keep a receiver's task alive through a bug: log it and start its loop again."""
        while True:
            try:
                await run(session)
            except Exception:
                log.exception("alert_receiver_crashed", receiver=label)
                await asyncio.sleep(1.0)

    # -- evaluation ----------------------------------------------------------------------------------
    async def _listen(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.service is None:
                self._full = True
            else:
                self._dirty.add(event.service)  # and what needs it: whether their alerts are impacted may change
                self._dirty.update(dependencies.closure(self._dependents, event.service))
                if event.kind in RUN_EVENTS:
                    self._failed_runs.pop(event.service, None)
            self._wake.set()

    async def _evaluate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_resend = last_full = loop.time()
        while True:
            resend = self._resend_interval()
            wait = min(max(0.0, last_resend + resend - loop.time()), max(0.0, last_full + FULL_EVERY - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            if loop.time() - last_full >= FULL_EVERY:
                last_full, self._full = loop.time(), True
            try:
                await self._evaluate_pending()
            except Exception:
                log.exception("alert_evaluation_failed")
            if loop.time() - last_resend >= resend:
                last_resend = loop.time()
                for target in self.targets.values():
                    target.resend()
            await asyncio.sleep(EVALUATE_GAP)  # rate limit: events arriving meanwhile share the next evaluation

    def _resend_interval(self) -> float:
        """The shortest resend interval that a receiver section asks for (an hour if none does)."""
        wanted = (kind.resend(getattr(self.config.alerts, kind.key)) for kind in RECEIVERS)
        return min((interval for interval in wanted if interval is not None), default=3600.0)

    async def _evaluate_pending(self) -> None:
        if self._subscription is not None and self._subscription.dropped != self._dropped_seen:
            self._dropped_seen = self._subscription.dropped  # what the lost events said is unknown: look at all
            self._failed_runs.clear()
            self._full = True
        full, dirty = self._full, self._dirty
        self._full, self._dirty = False, set()
        if not full:
            if dirty:
                self.evaluate(dirty)
            return
        self.evaluate(())  # resolves the alerts of services a reload removed
        names = sorted(self._estate.config.services)
        for begin in range(0, len(names), CHUNK):  # a large estate in slices: the loop stays responsive
            self.evaluate(names[begin:begin + CHUNK])
            await asyncio.sleep(0)

    def evaluate(self, services: Iterable[str] | None = None) -> None:
        """Derive the alerts of `services` (default: every service) now; tell every receiver what started
        firing and what resolved. The alerts of services no longer configured resolve in any case."""
        now = self.clock()
        estate = self._estate
        configured = estate.config.services
        names = set(configured) if services is None else {name for name in services if name in configured}
        snapshot = build_snapshot(estate, sorted(names), self._failed_run)
        derived: dict[str, dict[Key, Alert]] = {name: {} for name in names}
        held: dict[str, dict[Key, Alert]] = {name: {} for name in names}
        for alert in active_alerts(snapshot, now):
            (held if alert.impacted else derived)[alert.service][alert.labels] = alert
        derived.update({name: {} for name in self._by_service if name not in configured})
        derived[ESTATE] = {alert.labels: alert for alert in site_alerts(snapshot)}  # no service: derived each time
        held.update({name: {} for name in self.suppressed if name not in configured})
        self._hold(held)
        fired: list[Alert] = []
        resolved: list[tuple[Alert, float]] = []
        for name, alerts in derived.items():
            self._merge(name, alerts, now, fired, resolved)
        for alert in fired:
            log.info("alert_firing", alertname=alert.name, **_log_labels(alert))
        for alert, _ in resolved:
            log.info("alert_resolved", alertname=alert.name, **_log_labels(alert))
        if fired or resolved:
            for target in self.targets.values():
                target.changed(fired, resolved)

    def _merge(self, name: str, alerts: dict[Key, Alert], now: float, fired: list[Alert],
               resolved: list[tuple[Alert, float]]) -> None:
        """Adopt a service's newly derived alerts; note what started firing and what resolved."""
        known = self._by_service.get(name, {})
        for key, alert in alerts.items():
            if key in known:  # the same alert: it keeps its start, its annotations may have changed
                alerts[key] = replace(alert, starts_at=known[key].starts_at)
            else:
                fired.append(alert)
            self.firing[key] = alerts[key]
        for key, alert in known.items():
            if key not in alerts:
                resolved.append((alert, now))
                self.firing.pop(key, None)
        if alerts:
            self._by_service[name] = alerts
        else:
            self._by_service.pop(name, None)

    def _hold(self, held: dict[str, dict[Key, Alert]]) -> None:
        """Keep the alerts explained by a dependency (shown and counted, never sent); log each once."""
        for name, alerts in held.items():
            known = self.suppressed.pop(name, {})
            for key, alert in alerts.items():
                if key not in known:
                    log.info("alert_suppressed", alertname=alert.name, impacted_by=alert.labels["impacted_by"],
                             **_log_labels(alert))
                else:
                    alerts[key] = replace(alert, starts_at=known[key].starts_at)
            if alerts:
                self.suppressed[name] = alerts

    def _failed_run(self, service: str) -> FailedRun | None:
        """The service's unacknowledged failed run, cached until a run finishes or is acknowledged."""
        if service not in self._failed_runs:
            record = self._estate.unacknowledged_run(service)
            self._failed_runs[service] = None if record is None else FailedRun(
                record.id, record.runbook, record.kind, record.to_site, record.result, record.detail,
                record.ended if record.ended is not None else record.started,
            )
        return self._failed_runs[service]

    # -- helpers for the receivers -------------------------------------------------------------------
    @property
    def instance(self) -> str:
        return self.config.instance

    def generator_url(self, alert: Alert) -> str:
        if not alert.service:  # about the estate (BcdSiteLost): the status page
            return f"http://{self._listen_address}/"
        return f"http://{self._listen_address}/api/v1/services/{quote(alert.service, safe='')}"

    @staticmethod
    def headers() -> dict[str, str]:
        return {"Content-Type": "application/json", "User-Agent": f"bcd/{__version__}"}


def _log_labels(alert: Alert) -> dict[str, str]:
    names = ("service", "site", "probe", "severity", "guard")
    fields = {key: alert.labels[key] for key in names if key in alert.labels}
    return {**fields, "summary": alert.annotations["summary"]}
