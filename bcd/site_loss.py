"""Site lost: a data centre where every service with a probe there is seen `down` — at least MIN_SERVICES of
them: one service down is that service's failure as far as anyone can tell, not its site's.

Alone, bcd counts per site the services its own health machines see down there (O(1) per transition). In a
cluster, a site is a candidate when this instance sees every service there down (or suspects itself and
withdraws its view), and is lost only when, for each service, a quorum of vantages sees it down there — the
same per-service quorum a failover needs (`policy.Quorum.reached`); candidates are confirmed on every tick,
as the other vantages' views change without a transition here.

A site that becomes lost is announced as a `site_lost` event (the site, the services, and the plans configured
for it); when it ends, `site_recovered`. A recovery plan with `trigger: auto` subscribes to the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bcd import events
from bcd.events import Event, EventKind
from bcd.health import SiteHealth
from bcd.model import SiteState
from bcd.policy import Quorum

MIN_SERVICES = 2


class QuorumSource(Protocol):
    """The cluster link, as far as site loss goes."""

    def quorum(self, service: str, active: str) -> Quorum: ...


class ServiceSites(Protocol):
    @property
    def sites(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class LostSite:
    """A site seen lost since `since`, with every service probed there (sorted)."""

    site: str
    since: float
    services: tuple[str, ...]
    plans: tuple[str, ...] = ()  # the recovery plans from this site, when `plans:` are configured


def probed(services: Mapping[str, ServiceSites]) -> dict[str, set[str]]:
    """Site -> the services with at least one probe there."""
    result: dict[str, set[str]] = {}
    for name, service in services.items():
        for site, config in service.sites.items():
            if getattr(config, "probes", None):
                result.setdefault(site, set()).add(name)
    return result


def plans_for(config: object, site: str) -> tuple[str, ...]:
    """The names of the recovery plans that move services away from `site` (none while the config has no
    `plans:`). Tolerant of the plan's shape: its source site is read as `from_site`, `from_` or `source`."""
    plans = getattr(config, "plans", None)
    if not isinstance(plans, Mapping):
        return ()
    found = []
    for name, plan in plans.items():
        source = next((value for attr in ("from_site", "from_", "source")
                       if isinstance(value := getattr(plan, attr, None), str)), None)
        if source is None and isinstance(plan, Mapping):
            source = plan.get("from")
        if source == site:
            found.append(str(name))
    return tuple(sorted(found))


@dataclass
class SiteLoss:
    """Which sites are lost now; every change goes out through `emit` (the engine's: journaled, then published)."""

    emit: Callable[..., None]
    config: Any = None
    lost: dict[str, LostSite] = field(default_factory=dict)
    _probed: dict[str, set[str]] = field(default_factory=dict)
    _down: dict[str, set[str]] = field(default_factory=dict)

    def configure(self, config: Any, health: Mapping[tuple[str, str], SiteHealth]) -> None:
        """Adopt a (re)loaded config: recount from the current health of every site."""
        self.config = config
        self._probed = probed(config.services)
        self._down = {site: {name for name in names if _is_down(health.get((name, site)))}
                      for site, names in self._probed.items()}

    def update(self, site: SiteHealth, at: float, cluster: QuorumSource | None) -> None:
        """A site's health changed: count it; alone, decide at once (in a cluster, `confirm()` on every tick)."""
        names = self._probed.get(site.site)
        if names is None or site.service not in names:
            return
        down = self._down.setdefault(site.site, set())
        if _is_down(site):
            down.add(site.service)
        else:
            down.discard(site.service)
        if cluster is None:
            self.confirm(at, None)

    def candidates(self) -> Iterable[str]:
        """The sites where this instance sees every probed service down (at least MIN_SERVICES)."""
        return [site for site, names in self._probed.items()
                if len(names) >= MIN_SERVICES and self._down.get(site) == names]

    def confirm(self, at: float, cluster: QuorumSource | None) -> None:
        """Decide again which sites are lost (in a cluster: each service's down confirmed by a quorum of vantages);
        emit `site_lost` / `site_recovered` for what changed since the last call."""
        now_lost = {site for site in self.candidates()
                    if cluster is None or all(cluster.quorum(name, site).reached for name in self._probed[site])}
        if now_lost == set(self.lost):
            return
        changes: list[Event] = []
        for site in sorted(now_lost - set(self.lost)):
            services = tuple(sorted(self._probed[site]))
            lost = self.lost[site] = LostSite(site, at, services, plans_for(self.config, site))
            reason = f"site {site} lost: every service probed there is down ({', '.join(services)})"
            changes.append(Event(EventKind.SITE_LOST, at, None, site, reason,
                                 events.SiteLost(services, lost.plans)))
        for site in sorted(set(self.lost) - now_lost):
            gone = self.lost.pop(site)
            up = sorted(set(self._probed.get(site, ())) - self._down.get(site, set()))
            reason = f"site {site} no longer lost after {at - gone.since:.0f}s: " + (
                f"up again: {', '.join(up)}" if up else "not confirmed by a quorum of vantages")
            changes.append(Event(EventKind.SITE_RECOVERED, at, None, site, reason,
                                 events.SiteRecovered(gone.services, gone.since)))
        for event in changes:
            self.emit(event, services=list(getattr(event.data, "services", ())), reason=event.reason)


def _is_down(site: SiteHealth | None) -> bool:
    return site is not None and site.state is SiteState.DOWN
