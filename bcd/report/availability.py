"""Time in each state, per service and per site, from the journal's transitions, in one pass.

Between two events of a service every one of its sites keeps its state; each stretch is split by the daemon's
spans (bcd.report.source.Spans) into time observed in that state and time `unobserved`. A service is in the
state of its active site. An incident is a stretch in which the active site was not `up` (from its first
failure) and reached `down`, until the service was served by an `up` site again; a failing check that was
never confirmed `down` is no incident.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bcd.report.model import Availability
from bcd.report.source import Row, Spans

NOT_COUNTED = frozenset({"maintenance", "unknown"})  # neither a failure nor an up: no incident starts or ends
WORST = {"down": 3, "flapping": 2, "degraded": 1}


@dataclass(slots=True)
class OpenIncident:
    start: float
    site: str
    worst: str


@dataclass(slots=True)
class Counts:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, state: str, observed: float, total: float) -> None:
        if observed > 0:
            self.seconds[state] = self.seconds.get(state, 0.0) + observed
        if total - observed > 1e-9:
            self.seconds["unobserved"] = self.seconds.get("unobserved", 0.0) + total - observed

    def frozen(self) -> Availability:
        return Availability(dict(self.seconds))


@dataclass(slots=True)
class ServiceTrack:
    """One service while the journal is walked: its sites' states, its active site, what was counted."""

    name: str
    active: str
    states: dict[str, str]
    since: float
    service: Counts = field(default_factory=Counts)
    sites: dict[str, Counts] = field(default_factory=dict)
    standby: dict[str, list[float]] = field(default_factory=dict)  # site → [seconds standby, of which not up]
    incidents: list[tuple[float, float | None, str, str]] = field(default_factory=list)
    open: OpenIncident | None = None

    def advance(self, t: float, spans: Spans) -> None:
        """Count [since, t) in the current states."""
        if t <= self.since:
            return
        total, observed = t - self.since, spans.covered(self.since, t)
        for site, state in self.states.items():
            self.sites.setdefault(site, Counts()).add(state, observed, total)
            if site != self.active:
                standby = self.standby.setdefault(site, [0.0, 0.0])
                standby[0] += observed
                if state != "up":
                    standby[1] += observed
        self.service.add(self.states.get(self.active, "unknown"), observed, total)
        self.since = t

    def apply(self, t: float, kind: str, site: str | None, to: str | None) -> None:
        """A transition (`site` to `to`) or an active-site change (to `to`), at `t` (after `advance(t)`)."""
        if to is None:
            return
        if kind == "active_changed":
            self.active = to
            self.states.setdefault(to, "unknown")
        elif site is not None:
            self.states[site] = to
        self.follow(t)

    def follow(self, t: float) -> None:
        """Open, worsen or close the incident after a change at `t`."""
        state = self.states.get(self.active, "unknown")
        if state == "up":
            if self.open is not None:
                self._close(t)
        elif state not in NOT_COUNTED:
            if self.open is None:
                self.open = OpenIncident(t, self.active, state)
            elif WORST.get(state, 0) > WORST.get(self.open.worst, 0):
                self.open.worst = state

    def _close(self, end: float | None) -> None:
        assert self.open is not None
        if self.open.worst == "down":
            self.incidents.append((self.open.start, end, self.open.site, self.open.worst))
        self.open = None

    def finish(self, end: float, spans: Spans) -> None:
        self.advance(end, spans)
        if self.open is not None:
            self._close(None)


def walk(tracks: dict[str, ServiceTrack], rows: Iterable[Row], spans: Spans) -> None:
    """Apply every row to its service's track (rows of services not tracked are skipped)."""
    for at, kind, service, site, to in rows:
        track = tracks.get(service)
        if track is None:
            continue
        if at > track.since:
            track.advance(at, spans)
        track.apply(max(at, track.since), kind, site, to)


def start_tracks(start: float, sites: dict[str, tuple[str, ...]], home: dict[str, str],
                 states: dict[tuple[str, str], str], active: dict[str, str]) -> dict[str, ServiceTrack]:
    """A track per service at the period's start: each site's state and the active site as the journal had
    them then (a site never seen: `unknown`; no active-site change yet: the configured home)."""
    tracks = {}
    for name, names in sites.items():
        current = {site: states.get((name, site), "unknown") for site in names}
        track = ServiceTrack(name, active.get(name, home[name]), current, start)
        track.states.setdefault(track.active, "unknown")
        track.follow(start)
        tracks[name] = track
    return tracks
