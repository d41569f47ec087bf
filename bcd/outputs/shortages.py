"""Probe runs bcd could not make for a reason of its own (no file descriptor, no memory, no buffer space).

Such a run says nothing about its target: it never reaches the health machines (a site does not go down
because bcd ran out of file descriptors). It is counted in `bcd_probe_internal_errors_total{reason}` (alert
BcdProbeInternalErrors) and logged, at most once per LOG_EVERY seconds per reason with the count since.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import structlog

from bcd.model import Observation

log = structlog.get_logger("bcd.probes")

LOG_EVERY = 10.0


class Shortages:
    """Counts of probe runs lost to a local shortage, by errno name."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._logged: dict[str, tuple[float, int]] = {}  # reason → (when last logged, count then)

    def record(self, obs: Observation) -> None:
        reason = obs.internal or "unknown"
        self.counts[reason] += 1
        now = self._clock()
        when, count = self._logged.get(reason, (-LOG_EVERY, 0))
        if now - when >= LOG_EVERY:
            self._logged[reason] = (now, self.counts[reason])
            log.error("probe_internal_error", reason=reason, service=obs.key.service, site=obs.key.site,
                      probe=obs.key.probe, detail=obs.reason, runs_lost_since_last=self.counts[reason] - count,
                      hint="bcd itself is short of resources: raise LimitNOFILE/memory; health states are kept")
