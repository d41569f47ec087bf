"""Time in each state, per service and per site, from the journal's transitions, in one pass.

Each site keeps its state until its next transition; each stretch is split by the daemon's spans
(bcd.report.source.Spans) into time observed in that state and time `unobserved`. A service is in the state of
its active site. Rows from before the period only set the states the period starts in.

An incident is a stretch in which the active site was not `up` (from its first failure) and reached `down`,
until the service was served by an `up` site again; a failing check never confirmed `down` is no incident.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from bcd.report.lags import LagTrack
from bcd.report.model import Availability
from bcd.report.source import Row, Spans

Seconds = defaultdict[str, float]  # time by state (`+=` without a lookup first: a million times a year)
NOT_COUNTED = frozenset({"maintenance", "unknown"})  # neither a failure nor an up: no incident starts or ends
WORST = {"down": 3, "flapping": 2, "degraded": 1}


def _add(seconds: dict[str, float], state: str, observed: float, total: float) -> None:
    if observed > 0:
        seconds[state] = seconds.get(state, 0.0) + observed
    if total - observed > 1e-9:
        seconds["unobserved"] = seconds.get("unobserved", 0.0) + total - observed


@dataclass(slots=True)
class SiteTrack:
    state: str
    since: float
    seconds: Seconds = field(default_factory=lambda: defaultdict(float))
    standby_seconds: float = 0.0  # observed while another site was active, in a known state
    standby_not_up: float = 0.0

    def close(self, t: float, spans: Spans, standby: bool, service: Seconds | None = None) -> float:
        """Count [since, t) in the current state, and in `service` too (the service's seconds, when this is the
        active site and its stretch is the service's); returns the time of it observed (0 when t <= since)."""
        since = self.since
        if t <= since:
            return 0.0
        first, last = spans.last  # Spans.covered's first try, inlined: this runs once per transition
        observed = t - since if first <= since and t <= last else spans.covered(since, t)
        seconds, state = self.seconds, self.state
        if observed > 0:  # _add, inlined: this runs once per transition (a year is a million)
            seconds[state] += observed
            if service is not None:
                service[state] += observed
        if t - since - observed > 1e-9:
            seconds["unobserved"] += t - since - observed
            if service is not None:
                service["unobserved"] += t - since - observed
        if standby and state != "unknown":  # not yet probed (or before the journal's first event): no standby yet
            self.standby_seconds += observed
            if state != "up":
                self.standby_not_up += observed
        self.since = t
        return observed


@dataclass(slots=True)
class OpenIncident:
    start: float
    site: str
    worst: str


@dataclass(slots=True)
class ServiceTrack:
    """One service while the journal is walked: its sites, its active site, what was counted."""

    name: str
    active: str
    sites: dict[str, SiteTrack]
    since: float  # the service's own stretch (its active site's state)
    seconds: Seconds = field(default_factory=lambda: defaultdict(float))
    incidents: list[tuple[float, float | None, str, str]] = field(default_factory=list)
    downs: dict[str, list[float]] = field(default_factory=dict)  # site → when it was confirmed down (recoveries)
    open: OpenIncident | None = None
    start: float = 0.0  # the period's
    lags: dict[str, LagTrack] = field(default_factory=dict)  # the sites with data_lag events (bcd.report.lags)

    def state(self) -> str:
        site = self.sites.get(self.active)
        return "unknown" if site is None else site.state

    def _close(self, t: float, spans: Spans) -> None:
        if t > self.since:
            _add(self.seconds, self.state(), spans.covered(self.since, t), t - self.since)
            self.since = t

    def _site(self, name: str, t: float) -> SiteTrack:
        site = self.sites.get(name)
        if site is None:  # a site the config no longer has, or a new active one never seen
            site = self.sites[name] = SiteTrack("unknown", t)
        return site

    def transition(self, t: float, name: str, to: str, spans: Spans) -> None:
        site = self.sites.get(name) or self._site(name, t)
        if name != self.active:  # a standby's change changes no incident
            site.close(t, spans, True)
            site.state = to
            if to == "down":
                self.downs.setdefault(name, []).append(t)
            return
        since = site.since
        if since == self.since:  # the service's stretch is its active site's: counted once, into both
            site.close(t, spans, False, self.seconds)
            if t > since:
                self.since = t
        else:
            site.close(t, spans, False)
            self._close(t, spans)
        site.state = to
        if to == "down":
            self.downs.setdefault(name, []).append(t)
        if to != "up" or self.open is not None:  # (back up with no incident open changes none)
            self._follow(t, to)

    def active_changed(self, t: float, to: str, spans: Spans) -> None:
        for name, site in self.sites.items():  # which sites are standby changes
            site.close(t, spans, name != self.active)
        self._close(t, spans)
        self.active = to
        self._site(to, t)
        self.follow(t)

    def follow(self, t: float) -> None:
        """Open, worsen or close the incident after a change at `t` (not before the period: `since`)."""
        self._follow(t, self.state())

    def _follow(self, t: float, state: str) -> None:
        """`follow`, the service's state (its active site's) given."""
        since = self.since
        if state == "up":
            if self.open is not None:
                self._end(t if t > since else since)
        elif state not in NOT_COUNTED:
            if self.open is None:
                self.open = OpenIncident(t if t > since else since, self.active, state)
            elif WORST.get(state, 0) > WORST.get(self.open.worst, 0):
                self.open.worst = state

    def _end(self, end: float | None) -> None:
        assert self.open is not None
        if self.open.worst == "down" and (end is None or end > self.open.start):  # not one over before the period
            self.incidents.append((self.open.start, end, self.open.site, self.open.worst))
        self.open = None

    def finish(self, end: float, spans: Spans) -> None:
        for name, site in self.sites.items():
            site.close(end, spans, name != self.active)
        self._close(end, spans)
        if self.open is not None:
            self._end(None)

    def availability(self) -> Availability:
        return Availability(dict(self.seconds))


def walk(tracks: dict[str, ServiceTrack], batches: Iterable[list[Row]], spans: Spans, known: tuple[str, ...],
         start: float) -> list[str]:
    """Apply every row to its service's track, in order (rows of services not tracked are skipped); a site or
    `to` given as an index is the word of `known` there. A row from before the period (before a track's
    `since`) only sets a state: nothing is counted for it. Returns the reasons of the journal's gaps (rows
    without a service) from `start` on."""
    gaps: list[str] = []
    for batch in batches:
        for at, service, coded_site, coded_to, lag in batch:
            track = tracks.get(service) if service is not None else None
            to = known[coded_to] if isinstance(coded_to, int) else coded_to
            if track is None or to is None:
                if service is None and to is not None and at >= start:
                    gaps.append(to)
                continue
            site = known[coded_site] if isinstance(coded_site, int) else coded_site
            if site is None:
                track.active_changed(at, to, spans)
            elif lag is None:
                track.transition(at, site, to, spans)
            else:
                track.lags.setdefault(site, LagTrack(track.start)).row(at, to, lag)
    return gaps


def start_tracks(start: float, sites: dict[str, tuple[str, ...]], home: dict[str, str]) -> dict[str, ServiceTrack]:
    """A track per service at the period's start: every site `unknown` and the configured home active, until
    the journal's rows from before the period say otherwise."""
    return {name: ServiceTrack(name, home[name], {site: SiteTrack("unknown", start) for site in names}, start,
                               start=start)
            for name, names in sites.items()}
