"""Data-lag evidence for the journal: a site's lag as it crosses its service's RPO, and its running maximum.

The lag is measured live by a probe (`bcd.data_lag`); the continuity report needs what it was over a period.
One `data_lag` event (`bcd.events.DataLag`) when a site's lag goes over the RPO or back within it (and for the
first lag measured after a start, so that the journal says where it stands: it may have moved while the daemon
was stopped), and one with the highest lag of each stretch of at least MAX_EVERY seconds, only when it differs
from the last one written: a few events an hour per site, never one per observation. Both go through the
engine's `emit` (journaled by the group commit).

The maximum pending when observations stop (the probe removed, the site down, the daemon stopping) must not be
lost: a timer on the event loop writes it when its stretch ends (one timer per site with a pending maximum, armed
by the first lag of a stretch), `configure` writes it for the sites a reload removes, and `close` for every site when
the daemon stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bcd.data_lag import measured
from bcd.events import DataLag, Event, EventKind
from bcd.journal.writer import Timer, _loop_call_later
from bcd.model import Observation
from bcd.rpo import Lag

if TYPE_CHECKING:
    from bcd.config import Config
    from bcd.config.models import DataLagRef

CallLater = Callable[[float, Callable[[], None]], Timer | None]  # None: no event loop to wait on
MAX_EVERY = 300.0  # seconds: a running maximum is written at most this often (and only when it changed)


def _s(value: float) -> str:
    return f"{value:g} s"


def _ref(config: Config, service: str, site: str) -> DataLagRef | None:
    """The `data_lag:` of `site` of `service`, None when it has none (or is not configured)."""
    found = config.services.get(service)
    where = found.sites.get(site) if found is not None else None
    return where.data_lag if where is not None else None


@dataclass(slots=True)
class _Track:
    """One site of a service: whether its lag is over the RPO, and the maximum of the stretch since `since`."""

    since: float
    over: bool | None = None  # None: not known yet (the first lag measured since start is journaled either way)
    high: float | None = None
    written: float | None = None  # the last maximum written
    rpo: float | None = None  # the service's RPO when its lag was last noted
    timer: Timer | None = None  # writes `high` when the stretch ends, if no observation has by then


class LagJournal:
    """Turns the lags the engine observes into `data_lag` events (`emit`: the engine's; `call_later`: the running
    event loop's by default, none without one: then a pending maximum waits for an observation or `close`)."""

    def __init__(self, emit: Callable[[Event], None], clock: Callable[[], float] = time.time,
                 call_later: CallLater = _loop_call_later) -> None:
        self.emit = emit
        self.clock = clock
        self.call_later = call_later
        self.tracks: dict[tuple[str, str], _Track] = {}

    def observed(self, obs: Observation, config: Config) -> Observation:
        """Note the data lag `obs` measures, when it is its site's `data_lag` probe (else nothing); returns `obs`."""
        service = config.services.get(obs.key.service)  # inline, not _ref: this runs for every observation
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
        track.rpo = rpo
        over = rpo is not None and lag > rpo
        if over != track.over and rpo is not None:
            words = (f"exceeds the RPO of {_s(rpo)}" if over else
                     f"is {'back ' if track.over else ''}within the RPO of {_s(rpo)}")
            track.over = over
            self.emit(Event(EventKind.DATA_LAG, at, service, site, f"{service} at {site}: data lag {_s(lag)} {words}",
                            DataLag("crossing", lag, over, rpo)))
        if track.high is None and track.timer is None:  # the first lag of a stretch: write its maximum at its end
            track.timer = self.call_later(max(0.0, track.since + MAX_EVERY - self.clock()),
                                          lambda: self._ended(service, site))
        track.high = lag if track.high is None else max(track.high, lag)
        if at - track.since >= MAX_EVERY:
            self._write(service, site, track, at)

    def configure(self, config: Config) -> None:
        """After a reload: write the pending maximum of each site no longer measuring its lag (its service, the site
        or its `data_lag` removed), and stop tracking it."""
        for service, site in [key for key in self.tracks if _ref(config, *key) is None]:
            self._write(service, site, self.tracks.pop((service, site)), self.clock())

    def close(self) -> None:
        """Write every pending maximum (the daemon is stopping: observations end here)."""
        now = self.clock()
        for (service, site), track in self.tracks.items():
            self._write(service, site, track, now)

    def _ended(self, service: str, site: str) -> None:
        track = self.tracks.get((service, site))
        if track is not None:
            track.timer = None
            self._write(service, site, track, max(self.clock(), track.since + MAX_EVERY))

    def _write(self, service: str, site: str, track: _Track, at: float) -> None:
        """End the stretch at `at`: its maximum is journaled when it differs from the last one written."""
        if track.timer is not None:
            track.timer.cancel()
            track.timer = None
        if track.high is not None and track.high != track.written:
            rpo = track.rpo
            reason = (f"{service} at {site}: highest data lag {_s(track.high)} over the last {_s(at - track.since)}"
                      + (f" (RPO {_s(rpo)})" if rpo is not None else ""))
            self.emit(Event(EventKind.DATA_LAG, at, service, site, reason,
                            DataLag("max", track.high, rpo is not None and track.high > rpo, rpo, track.since)))
            track.written = track.high
        track.since, track.high = at, None
