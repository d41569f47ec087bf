"""The live estate: applies observations to the pure health machines, persists and announces changes.

This is the edge around `bcd.health`: it owns the current `SiteHealth` of every (service, site) and the
status of every service, writes each change to the journal before announcing it on the bus, and logs one
line per change with its reason.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bcd import health
from bcd.bus import Bus
from bcd.config import Config
from bcd.health import SiteHealth, SiteRules, Thresholds
from bcd.journal import Journal, SavedService, SavedSite
from bcd.model import Event, Observation, ProbeKey, ServiceStatus, SiteState, Transition

log = structlog.get_logger("bcd.engine")


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str
    status: ServiceStatus
    active: str
    since: float
    reason: str


class Engine:
    def __init__(self, config: Config, journal: Journal, bus: Bus, clock: Callable[[], float] = time.time):
        self.journal = journal
        self.bus = bus
        self.clock = clock
        self.config = config
        self.sites: dict[tuple[str, str], SiteHealth] = {}
        self.services: dict[str, ServiceView] = {}
        self.rules: dict[tuple[str, str], SiteRules] = {}
        self.last: dict[ProbeKey, Observation] = {}
        self.transitions: Counter[tuple[str, str, str, str]] = Counter()
        self._pending_sites: dict[tuple[str, str], SavedSite] = {}
        self._pending_services: dict[str, SavedService] = {}
        self._pending_events: list[tuple[Event, dict[str, object]]] = []
        self._flush_scheduled = False
        self._restore()
        self.apply_config(config)

    # -- configuration -------------------------------------------------------------------------------
    def apply_config(self, config: Config) -> None:
        """Adopt a (re)loaded config: new sites start unknown, removed ones are forgotten."""
        self.config = config
        now = self.clock()
        rules: dict[tuple[str, str], SiteRules] = {}
        for name, service in config.services.items():
            for site_name, site in service.sites.items():
                thresholds = {}
                for probe in site.probes:
                    timing = config.timing(name, probe)
                    thresholds[probe.name] = Thresholds(rise=timing.rise, fall=timing.fall)
                rules[(name, site_name)] = SiteRules(
                    probes=thresholds, flap_high=config.flapping.high, flap_low=config.flapping.low
                )
        self.rules = rules
        self.sites = {
            key: health.reconfigure(self.sites.get(key) or SiteHealth.new(key[0], key[1], now), rule)
            for key, rule in rules.items()
        }
        self.last = {key: obs for key, obs in self.last.items() if (key.service, key.site) in rules}
        self.transitions = Counter({k: v for k, v in self.transitions.items() if (k[0], k[1]) in rules})
        self.services = {name: self._service_view(name, now) for name in config.services}
        for name in list(self.services):
            self._evaluate(name, now)

    def _service_view(self, name: str, now: float) -> ServiceView:
        service = self.config.services[name]
        known = self.services.get(name)
        if known is not None and known.active in service.sites:
            return known
        return ServiceView(name, ServiceStatus.UNKNOWN, service.active, now, "starting")

    def _restore(self) -> None:
        for saved in self.journal.sites():
            self.sites[(saved.service, saved.site)] = SiteHealth.restore(
                saved.service,
                saved.site,
                base=SiteState(saved.base),
                flapping=saved.flapping,
                maintenance_until=saved.maintenance_until,
                maintenance_reason=saved.maintenance_reason,
                since=saved.since,
                reason=saved.reason,
            )
        for service in self.journal.services():
            self.services[service.service] = ServiceView(
                service.service, ServiceStatus(service.status), service.active, service.since, service.reason
            )

    # -- inputs --------------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> None:
        key = (obs.key.service, obs.key.site)
        current = self.sites.get(key)
        if current is None:
            return  # removed by a reload while the probe was in flight
        self.last[obs.key] = obs
        updated, transition = health.observe(current, obs, self.rules[key])
        self.sites[key] = updated
        if transition is not None:
            self._announce_transition(updated, transition)

    def tick(self) -> None:
        """Time passing: expire maintenance windows."""
        now = self.clock()
        for key, current in list(self.sites.items()):
            updated, transition = health.tick(current, now)
            self.sites[key] = updated
            if transition is not None:
                self._announce_transition(updated, transition)

    # -- outputs: journaled first (group commit), then logged and published ------------------------------
    def _announce_transition(self, site: SiteHealth, transition: Transition) -> None:
        self.transitions[(transition.service, transition.site, transition.from_state, transition.to_state)] += 1
        self._pending_sites[(site.service, site.site)] = SavedSite(
            site.service, site.site, str(site.base), site.flapping, site.maintenance_until,
            site.maintenance_reason, site.since, site.reason,
        )
        event = Event(
            "site_transition", transition.at, transition.service, transition.site, transition.reason,
            {"from": str(transition.from_state), "to": str(transition.to_state)},
        )
        self._queue(event, {"service": transition.service, "site": transition.site,
                            "from_state": str(transition.from_state), "to_state": str(transition.to_state),
                            "reason": transition.reason})
        self._evaluate(transition.service, transition.at)

    def _evaluate(self, name: str, now: float) -> None:
        view = self.services[name]
        sites = {site: self.sites[(name, site)] for site in self.config.services[name].sites}
        status, reason = health.evaluate_service(view.active, sites)
        if status == view.status:
            return
        self.services[name] = ServiceView(name, status, view.active, now, reason)
        self._pending_services[name] = SavedService(name, str(status), view.active, now, reason)
        event = Event("service_status", now, name, None, reason,
                      {"from": str(view.status), "to": str(status), "active": view.active})
        self._queue(event, {"service": name, "from_status": str(view.status),
                            "to_status": str(status), "active": view.active, "reason": reason})

    def _queue(self, event: Event, log_fields: dict[str, object]) -> None:
        self._pending_events.append((event, log_fields))
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Commit what this loop iteration changed in one transaction, then log and publish it."""
        self._flush_scheduled = False
        sites, services, events = self._pending_sites, self._pending_services, self._pending_events
        self._pending_sites, self._pending_services, self._pending_events = {}, {}, []
        with self.journal.transaction():
            for saved_site in sites.values():
                self.journal.save_site(saved_site)
            for saved_service in services.values():
                self.journal.save_service(saved_service)
            journaled = [(self.journal.append(event), fields) for event, fields in events]
        for event, fields in journaled:
            log.info(event.kind, **fields)
            self.bus.publish(event)
