"""Data-lag evidence for the journal: a site's lag as it crosses its service's RPO, and its running maximum.

The lag is measured live by a probe (`bcd.data_lag`); the continuity report needs what it was over a period.
One `data_lag` event (`bcd.events.DataLag`) when a site's lag goes over the RPO or back within it (and for the
first lag measured after a start, so that the journal says where it stands: it may have moved while the daemon
was stopped), and one with the highest lag of each stretch of at least MAX_EVERY seconds, only when it differs
from the last one written: a few events an hour per site, never one per observation. Both go through the
engine's `emit` (journaled by the group commit).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bcd.data_lag import measured
from bcd.events import DataLag, Event, EventKind
from bcd.model import Observation
from bcd.rpo import Lag

if TYPE_CHECKING:
    from bcd.config import Config

MAX_EVERY = 300.0  # seconds: a running maximum is written at most this often (and only when it changed)


def _s(value: float) -> str:
    return f"{value:g} s"


@dataclass(slots=True)
class _Track:
    """One site of a service: whether its lag is over the RPO, and the maximum of the stretch since `since`."""

    since: float
    over: bool | None = None  # None: not known yet (the first lag measured since start is journaled either way)
    high: float | None = None
    written: float | None = None  # the last maximum written


class LagJournal:
    """Turns the lags the engine observes into `data_lag` events (`emit`: the engine's)."""

    def __init__(self, emit: Callable[[Event], None]) -> None:
        self.emit = emit
        self.tracks: dict[tuple[str, str], _Track] = {}

    def observed(self, obs: Observation, config: Config) -> Observation:
        """Note the data lag `obs` measures, when it is its site's `data_lag` probe (else nothing); returns `obs`."""
        service = config.services.get(obs.key.service)
        site = service.sites.get(obs.key.site) if service is not None else None
        ref = site.data_lag if site is not None else None
        if ref is None or ref.probe != obs.key.probe:
            return obs
        value = measured(Lag("", 0.0), obs, ref.value).value
        if value is not None:
            self.note(obs.key.service, obs.key.site, value, obs.at, config.objectives(obs.key.service).rpo)
        return obs

    def note(self, service: str, site: str, lag: float, at: float, rpo: float | None) -> None:
        """One measured lag (seconds) at `at`: a crossing event when it crosses `rpo`, a maximum when due."""
        track = self.tracks.get((service, site))
        if track is None:
            track = self.tracks[(service, site)] = _Track(at)
        over = rpo is not None and lag > rpo
        if over != track.over and rpo is not None:
            words = (f"exceeds the RPO of {_s(rpo)}" if over else
                     f"is {'back ' if track.over else ''}within the RPO of {_s(rpo)}")
            track.over = over
            self.emit(Event(EventKind.DATA_LAG, at, service, site, f"{service} at {site}: data lag {_s(lag)} {words}",
                            DataLag("crossing", lag, over, rpo)))
        track.high = lag if track.high is None else max(track.high, lag)
        if at - track.since >= MAX_EVERY:
            if track.high != track.written:
                reason = (f"{service} at {site}: highest data lag {_s(track.high)} over the last {_s(at - track.since)}"
                          + (f" (RPO {_s(rpo)})" if rpo is not None else ""))
                self.emit(Event(EventKind.DATA_LAG, at, service, site, reason,
                                DataLag("max", track.high, rpo is not None and track.high > rpo, rpo, track.since)))
                track.written = track.high
            track.since, track.high = at, None
