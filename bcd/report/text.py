"""How a report writes numbers for people: percentages, durations, UTC times (shared by the renderers)."""

from __future__ import annotations

import datetime as dt

from bcd.report.model import STATES, Availability, Drill, LagFinding, ServiceReport


def percent(ratio: float | None, digits: int = 3) -> str:
    """e.g. "99.942 %"; "n/a" when nothing was observed."""
    return "n/a" if ratio is None else f"{ratio * 100:.{digits}f} %"


def share(part: float, whole: float) -> str:
    return "0 %" if whole <= 0 or part <= 0 else f"{part / whole * 100:.2f} %"


def duration(seconds: float | None) -> str:
    """e.g. "2d 3h", "1h 4m", "4m 10s", "12.5s"; "—" when not known."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds % 1 else f"{seconds:.0f}s"
    parts, left = [], round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])


def when(at: float | None) -> str:
    """e.g. "2026-07-14 03:12 UTC"; "—" when not known."""
    if at is None:
        return "—"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def apart(availability: Availability) -> str:
    """What was left out of the availability, e.g. "maintenance 2h; unobserved 1d 4h"."""
    seconds = availability.seconds
    parts = [f"{state} {duration(seconds[state])}" for state in ("maintenance", "unknown", "unobserved")
             if seconds.get(state, 0.0) >= 1]
    return "; ".join(parts) or "none"


def state_columns(service: ServiceReport) -> list[str]:
    """The states a service's site table shows a column for: up and down always, any other its sites spent time in
    (so that a site's columns add up to the period)."""
    return [state for state in STATES if state in ("up", "down")
            or any(site.availability.seconds.get(state, 0.0) > 0 for site in service.sites)]


def lag_sites(lag: LagFinding) -> str:
    """e.g. "worst 7m 30s against an RPO of 5m: hampshire 7m 30s, over the RPO for 20s; dorset 12s"."""
    sites = "; ".join(f"{site.site} {duration(site.worst)}"
                      + (f", over the RPO for {duration(site.over_seconds)}" if site.exceeded else "")
                      for site in lag.sites)
    return f"worst {duration(lag.worst)} against an RPO of {duration(lag.rpo)}: {sites}"


def drill_legs(drill: Drill) -> str:
    """e.g. "run 3 dorset → hampshire succeeded, run 4 hampshire → dorset succeeded"; "no run" when none."""
    return ", ".join(f"run {r.run_id} {r.from_site} → {r.to_site} {r.result.value}" for r in drill.runs) or "no run"
