"""When to re-probe a whole site at once: the first failures of probes of different services at one site within
a short window are a reason to look again at everything there, rather than wait for each probe's turn.

Pure: the time comes in. The scheduler feeds it every first failure (`health.doubt`'s SUSPECT) and runs the
burst; the cluster link asks it too when another vantage's view shows a site failing that looks up here.
"""

from __future__ import annotations


class Bursts:
    """First failures of `failures` different services at one site within `window` seconds call for a burst of
    that site; at most one burst per site per `gap` seconds, whoever asks. `failures` 0: never."""

    def __init__(self, failures: int, window: float, gap: float) -> None:
        self.failures = failures
        self.window = window
        self.gap = gap
        self._recent: dict[str, dict[str, float]] = {}  # site → service → when its probe first failed
        self._last: dict[str, float] = {}  # site → when its last burst was allowed

    def failed(self, site: str, service: str, now: float) -> str | None:
        """Record a first failure of a probe of `service` at `site`; the reason for a burst of the site if one
        is due now (the failures it counted are then forgotten)."""
        if self.failures <= 0:
            return None
        recent = self._recent.setdefault(site, {})
        recent[service] = now
        for name in [name for name, at in recent.items() if now - at > self.window]:
            del recent[name]
        if len(recent) < self.failures or not self.take(site, now):
            return None
        names = sorted(recent)
        recent.clear()
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"{len(names)} services failed at {site} within {self.window:g}s ({shown})"

    def take(self, site: str, now: float) -> bool:
        """Whether a burst of `site` may run now (none in the last `gap` seconds); if so, it is counted as run."""
        if self.failures <= 0:
            return False
        last = self._last.get(site)
        if last is not None and now - last < self.gap:
            return False
        self._last[site] = now
        return True

    def retain(self, sites: set[str]) -> None:
        """Forget sites no longer configured."""
        for table in (self._recent, self._last):
            for site in [site for site in table if site not in sites]:
                del table[site]
