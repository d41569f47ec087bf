"""How bcd keeps Python's cyclic garbage collector from stopping the event loop.

A daemon with tens of thousands of probes holds hundreds of thousands of long-lived objects (config
models, probe objects, schedules, metric accumulators). A full collection walks all of them and stopped
the loop for 100-300 ms every few seconds in the benchmark, far beyond the lateness the scheduler promises.
So: what exists once the config is loaded, and again once every probe has run, is collected and frozen (never
walked again; still freed by reference counting when dropped), and full collections are made rare. Cycles still
die young in the cheap generations; the rare full collection picks up the rest.

Only the composition root (`bcd.app`) calls these: they change the whole process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

THRESHOLDS = (700, 10, 1000)  # CPython's defaults, but a full collection after 1,000 (not 10) middle ones


def settle() -> None:
    """After a config (re)load: free the old config's cycles, then freeze everything alive. One full
    collection: a pause of a few hundred ms for a very large estate, once per load."""
    gc.set_threshold(*THRESHOLDS)
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    trim()


def freeze_survivors() -> None:
    """Once every probe has run: settle again, so that what the first runs created (metric accumulators, health
    state) is frozen too, after a full collection (a pause like the load's, once). Frozen without a collection,
    what those runs had left in reference cycles (a failed MQTT probe's client) would never be collected. (A
    collection of the unfrozen part alone, then a freeze, was measured: lateness got worse; see the README.)"""
    settle()


def _libc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _libc_trim()


def trim() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps them otherwise: the freed remains of a
    config load are several MB of resident memory for nothing)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass(slots=True)
class TrimTimer:
    """When to trim after scrapes of /metrics (each leaves C-heap blocks of up to a few MB): at the first look
    after a scrape, then at most once every `every` seconds while scrapes go on. 10 s: after each scrape at
    Prometheus's usual 15 s or more, on the ticker rather than in the scrape (a trim takes well under 1 ms),
    and never more often than that however often something scrapes."""

    every: float = 10.0
    _at: float = -math.inf
    _scrapes: int = 0

    def due(self, scrapes: int, now: float) -> bool:
        """`scrapes`: how many there have been so far; `now`: a monotonic clock."""
        if scrapes == self._scrapes or now - self._at < self.every:
            return False
        self._at, self._scrapes = now, scrapes
        return True


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No collection while building a large structure (a config load allocates millions of objects, and
    the collections they trigger would walk them all again and again: 2x the time of the load itself)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
