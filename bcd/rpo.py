"""The pure `rpo_exceeded` guard: may a service move to a site, given how far that site's data trails?

`Lag` is one site's data lag as last measured (`bcd.data_lag` reads it from the probes); `rpo_guard()` is a
function of (rpo, lag, now) used by `bcd.policy` for automatic runs and operator requests alike.

A lag not measured within its `max_age` (two probe intervals: the probe failed to report it, has not run yet,
or stopped) is unknown, and an unknown lag blocks as an excessive one does: an RPO is a promise about lost
data, and a failover that cannot show it keeps that promise needs a human who accepts the risk (`force`,
which journals the lag accepted). The last value measured, and its age, are in the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from bcd.model import Guard
from bcd.probes.base import seconds


@dataclass(frozen=True, slots=True)
class Lag:
    """One site's data lag as last measured: `value` in seconds (None: not measured), when, and by what."""

    source: str  # e.g. "probe replica, value lag"
    max_age: float  # seconds after `at` that the value still counts
    value: float | None = None
    at: float | None = None
    missing: str = "not measured yet"  # why `value` is None

    def describe(self, now: float) -> str:
        """e.g. "12.4s (probe replica, value lag, 3s ago)"."""
        if self.value is None:
            return f"unknown ({self.source}: {self.missing})"
        assert self.at is not None
        return f"{seconds(self.value)} ({self.source}, {seconds(max(now - self.at, 0.0))} ago)"

    def fresh(self, now: float) -> float | None:
        """The value when measured within `max_age` of `now`, else None (unknown)."""
        if self.value is None or self.at is None or now - self.at > self.max_age:
            return None
        return self.value


def rpo_guard(rpo: float | None, lag: Lag | None, target: str, now: float) -> tuple[Guard, str] | None:
    """`rpo_exceeded` when `target`'s data lags more than `rpo`, or its lag is unknown; None when it does
    not (no rpo, or the site measures no lag, is no guard)."""
    if rpo is None or lag is None:
        return None
    value = lag.fresh(now)
    if value is None:
        why = (f"{lag.source}: {lag.missing}" if lag.value is None
               else f"last {lag.describe(now)}, older than {seconds(lag.max_age)}")
        return Guard.RPO_EXCEEDED, f"data lag of {target} unknown ({why}); rpo {seconds(rpo)}"
    if value > rpo:
        return Guard.RPO_EXCEEDED, f"data lag of {target} {lag.describe(now)} exceeds rpo {seconds(rpo)}"
    return None


def lag_accepted(rpo: float | None, lag: Lag | None, target: str, now: float) -> str:
    """What a forced move accepts about `target`'s data ("" when its lag is within rpo or not guarded)."""
    held = rpo_guard(rpo, lag, target, now)
    return "" if held is None else f"accepted: {held[1]}"
