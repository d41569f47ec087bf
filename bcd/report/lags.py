"""Each site's data lag over a period, from the journal's `data_lag` events (bcd.lag_journal) as the report's one
pass over the journal meets them: the worst lag, and how long it stayed over the RPO (from the crossings).

A maximum is written only when it changed, so the last one before the period still holds at its start; a
crossing over the RPO before the period with none back since means the period starts over it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bcd.report.model import SiteLag


@dataclass(slots=True)
class LagTrack:
    """One site's lag while the journal is walked (rows before `start` only set where it stands)."""

    start: float
    worst: float | None = None
    over_since: float | None = None  # when the lag last went over the RPO; None: within it
    over_seconds: float = 0.0
    crossed: bool = False  # went over the RPO, or was over it, in the period

    def row(self, t: float, to: str, lag: float) -> None:
        """A `data_lag` row: `to` is `max`, `over` or `within` (a crossing)."""
        if t < self.start:  # where the lag stood before the period: its last value journaled
            self.worst = lag
        else:
            self.worst = lag if self.worst is None else max(self.worst, lag)
        if to == "over" and self.over_since is None:
            self.over_since = t
        elif to == "within" and self.over_since is not None:
            self._count(t)
            self.over_since = None

    def _count(self, t: float) -> None:
        assert self.over_since is not None
        if t > self.start:
            self.over_seconds += t - max(self.over_since, self.start)
            self.crossed = True

    def finish(self, site: str, end: float, rpo: float | None) -> SiteLag:
        """What the period shows for `site`, its end `end`."""
        if self.over_since is not None:
            self._count(end)
        exceeded = self.crossed or (rpo is not None and self.worst is not None and self.worst > rpo)
        return SiteLag(site, self.worst, self.over_seconds, exceeded)
