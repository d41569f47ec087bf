"""Vantage views and votes: our view published in the store, the other vantages' views read from it, and the
votes and quorum the pure policy is given. A vantage that sees every site of every service down suspects its
own network: it withdraws its view and does not vote."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from bcd import policy
from bcd.cluster.figures import ClusterFigures
from bcd.coordination import Coordinator
from bcd.engine import QUIET_STATUSES, Engine
from bcd.model import SiteState
from bcd.policy import Quorum, Vote

log = structlog.get_logger("bcd.cluster")

VIEW_MIN_GAP = 0.25  # our view is published at most 4 times a second


@dataclass(frozen=True, slots=True)
class SiteView:
    state: SiteState
    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class PeerView:
    """Another vantage's published view, as read."""

    vantage: str
    at: float  # when it was made (its wall clock)
    age: float  # seconds since it was written, on our clock
    services: dict[str, dict[str, SiteView]]
    executor: bool = True  # takes locks and runs runbooks (a view without the key comes from one that does)
    beats: bool = False  # reads beats (Coordinator.beat): a bcd before them needs whole views republished

    @classmethod
    def parse(cls, vantage: str, raw: bytes, age: float) -> PeerView | None:
        try:
            data = json.loads(raw)
            services = {
                service: {site: SiteView(SiteState(item["state"]), float(item["since"]), str(item["reason"]))
                          for site, item in sites.items()}
                for service, sites in data["services"].items()
            }
            return cls(vantage, float(data.get("at", 0.0)), age, services, data.get("executor") is not False,
                       data.get("beats") is True)
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("view_unreadable", vantage=vantage)
            return None


class Views:
    """Our view and the others' (`vantage` is ours), and the votes and quorum made of them."""

    def __init__(
        self,
        coordinator: Coordinator,
        engine: Engine,
        *,
        vantage: str,
        executor: bool = True,
        quorum: str | int = "majority",
        lease_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        reprobe: Callable[[str, str], object] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.engine = engine
        self.vantage = vantage
        self.executor = executor
        self.quorum_setting = quorum
        self.lease_ttl = lease_ttl
        self.republish = max(1.0, lease_ttl / 3)
        self.clock = clock
        self.wall_clock = wall_clock
        self.suspect = False
        self._parsed: dict[str, tuple[bytes, PeerView | None]] = {}
        self._seen_views: dict[str, bytes] = {}
        self._published: tuple[str, float] | None = None  # (content, when) of our last publication
        self._was_available = False
        self.reprobe = reprobe  # (site, reason): see doubts()
        self._doubts: dict[tuple[str, str, str], float] = {}  # (vantage, service, site) failing there → since

    def _our_view(self) -> dict[str, dict[str, dict[str, Any]]]:
        services: dict[str, dict[str, dict[str, Any]]] = {}
        for (service, site), health in self.engine.sites.items():
            services.setdefault(service, {})[site] = {
                "state": str(health.effective), "since": health.since, "reason": health.reason}
        return services

    def suspects_itself(self) -> bool:
        sites = self.engine.sites.values()
        return bool(self.engine.sites) and all(site.effective is SiteState.DOWN for site in sites)

    async def publish_once(self) -> None:
        """Publish (or withdraw) our view as needed; decide again where the others' views or the store's
        availability changed."""
        suspect = self.suspects_itself()
        if suspect != self.suspect:
            self.suspect = suspect
            if suspect:
                log.warning("vantage_suspects_itself", vantage=self.vantage,
                            reason="every site of every service looks down from here: probably our own network; "
                                   "view withdrawn, not voting")
            else:
                log.info("vantage_trusts_itself_again", vantage=self.vantage)
            self._refresh_contested()
        self._notice_others()  # before publishing: a publish or withdrawal failing in an outage must not hide it
        if suspect:
            if self._published is not None:
                await self.coordinator.withdraw_view()
                self._published = None
        else:
            await self._publish(json.dumps(self._our_view(), sort_keys=True))

    async def _publish(self, content: str) -> None:
        """Our view when it changed; else, every `republish` seconds, a beat (the view still holds), or the whole
        view again while another vantage does not read beats (a bcd before them)."""
        now = self.clock()
        if self._published is not None and self._published[0] == content:
            if now - self._published[1] < self.republish:
                return
            if all(peer.beats for peer in self.peers().values()):
                await self.coordinator.beat()
                self._published = (content, now)
                return
        view = (f'{{"vantage": {json.dumps(self.vantage)}, "at": {self.wall_clock()!r}, '
                f'"executor": {json.dumps(self.executor)}, "beats": true, "services": {content}}}')
        await self.coordinator.publish_view(view.encode())
        self._published = (content, now)

    def _notice_others(self) -> None:
        """Decide again where the others' views or the store's availability changed since last seen."""
        seen = {vantage: raw for vantage, (raw, _) in self.coordinator.views().items()}
        available = self.coordinator.available
        if seen != self._seen_views or available != self._was_available:
            if available != self._was_available:
                log.info("coordination_up" if available else "coordination_down", vantage=self.vantage)
            self._seen_views, self._was_available = seen, available
            self._refresh_contested()
            self.doubts()

    def _refresh_contested(self) -> None:
        """Decide again wherever votes matter: services whose active site is not up here, or not quiet."""
        for name, view in list(self.engine.services.items()):
            active = self.engine.sites.get((name, view.active))
            if view.status not in QUIET_STATUSES or (active is not None and active.effective is not SiteState.UP):
                self.engine.refresh(name)

    def doubts(self) -> None:
        """Re-probe (`reprobe`) every site that another vantage's view newly shows degraded or down while it is
        up here: each such change once (by its `since`), so a site that stays failing there costs nothing more."""
        if self.reprobe is None:
            return
        doubts: dict[tuple[str, str, str], float] = {}
        for vantage, peer in self.peers().items():
            for service, sites in peer.services.items():
                for site, view in sites.items():
                    if view.state not in (SiteState.DEGRADED, SiteState.DOWN):
                        continue
                    doubts[(vantage, service, site)] = view.since
                    ours = self.engine.sites.get((service, site))
                    news = self._doubts.get((vantage, service, site)) != view.since
                    if news and ours is not None and ours.effective is SiteState.UP:
                        self.reprobe(site, f"{vantage} sees {service} {view.state} at {site}: {view.reason}")
        self._doubts = doubts

    def figures(self, services: Mapping[str, Iterable[str]], holds: Callable[[str], bool]) -> ClusterFigures:
        """What /metrics shows: the live members and their views' ages, every site's votes, the locks held."""
        members = {} if self.suspect else {self.vantage: 0.0}
        members.update((vantage, peer.age) for vantage, peer in sorted(self.peers().items()))
        votes: dict[tuple[str, str], dict[SiteState, int]] = {}
        for name, sites in services.items():
            for site in sites:
                counts = votes[(name, site)] = dict.fromkeys(SiteState, 0)
                for vote in self.votes(name, site):
                    counts[vote.state] += 1
        return ClusterFigures(self.vantage, self.coordinator.available, members, votes,
                              {name: holds(name) for name in services})

    def peers(self) -> dict[str, PeerView]:
        """The other live vantages' views (a view older than twice the lease TTL does not count)."""
        result: dict[str, PeerView] = {}
        for vantage, (raw, age) in self.coordinator.views().items():
            if vantage == self.vantage or age > 2 * self.lease_ttl:
                continue
            cached = self._parsed.get(vantage)
            if cached is None or cached[0] != raw:
                cached = self._parsed[vantage] = (raw, PeerView.parse(vantage, raw, age))
            parsed = cached[1]
            if parsed is not None:
                result[vantage] = replace(parsed, age=age)
        return result

    def votes(self, service: str, site: str) -> list[Vote]:
        """Every live vantage's view of one site (ours first, unless we suspect ourselves)."""
        votes = []
        if not self.suspect and not self.suspects_itself():
            ours = self.engine.sites.get((service, site))
            if ours is not None:
                votes.append(Vote(self.vantage, ours.effective, ours.reason))
        for vantage, peer in sorted(self.peers().items()):
            theirs = peer.services.get(service, {}).get(site)
            votes.append(Vote(vantage, theirs.state if theirs else SiteState.UNKNOWN,
                              theirs.reason if theirs else "no view of this site"))
        return votes

    def quorum(self, service: str, active: str) -> Quorum:
        votes = tuple(self.votes(service, active))
        standbys = {site: tuple(self.votes(service, site)) for site in self.engine.config.services[service].sites
                    if site != active}
        return Quorum(self.coordinator.available, votes, policy.quorum_needed(self.quorum_setting, len(votes)),
                      self.suspect or self.suspects_itself(), standbys, self.executors())

    def executors(self) -> tuple[str, ...]:
        """The live vantages that take locks and run runbooks (ours first, unless we do not or suspect
        ourselves: a view withdrawn is no executor either)."""
        ours = (self.vantage,) if self.executor and not self.suspect and not self.suspects_itself() else ()
        return ours + tuple(vantage for vantage, peer in sorted(self.peers().items()) if peer.executor)

    def counted_views(self) -> dict[str, int]:
        """The store revision of every other vantage's view that votes count now (see peers())."""
        revisions = self.coordinator.view_revisions()
        return {vantage: revisions[vantage] for vantage in self.peers() if vantage in revisions}

    def evidence(self, service: str, active: str) -> dict[str, Any]:
        quorum = self.quorum(service, active)
        return {
            "vantage": self.vantage, "available": quorum.available, "needed": quorum.needed,
            "suspect_self": quorum.suspect_self, "down": list(quorum.down),
            "votes": {vote.vantage: {"state": str(vote.state), "reason": vote.reason} for vote in quorum.votes},
            "dissenting": [vote.vantage for vote in quorum.dissenting],
            "standby_votes": {site: {vote.vantage: str(vote.state) for vote in votes}
                              for site, votes in (quorum.standbys or {}).items()},
            "view_revisions": self.counted_views(),
            "views": self.views_of(service),
        }

    def views_of(self, service: str) -> dict[str, Any]:
        """Every live vantage's view of `service`, side by side (ours first)."""
        result: dict[str, Any] = {}
        if not self.suspect:
            result[self.vantage] = {"age": 0.0, "executor": self.executor, "sites": {
                site: {"state": str(health.effective), "since": health.since, "reason": health.reason}
                for (name, site), health in self.engine.sites.items() if name == service}}
        for vantage, peer in sorted(self.peers().items()):
            result[vantage] = {"age": round(peer.age, 3), "executor": peer.executor, "sites": {
                site: {"state": str(view.state), "since": view.since, "reason": view.reason}
                for site, view in peer.services.get(service, {}).items()}}
        return result
