"""The booked runs' families, from the store of bookings: runs this instance started or decided, by kind and
result (declared at 0, so a first refusal is an increase), and the bookings to come."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bcd.bookings import ENDINGS, RUN_KINDS, Booking, BookingKind, BookingState


class BookingCollector(Collector):
    """`bookings()`: every booking; `me`: this instance as `taken_by` names it (each outcome counts once, on the
    instance that decided it)."""

    def __init__(self, bookings: Callable[[], list[Booking]], me: str, clock: Callable[[], float] = time.time) -> None:
        self._bookings = bookings
        self._me = me
        self._clock = clock

    def collect(self) -> Iterable[CounterMetricFamily | GaugeMetricFamily]:
        bookings = self._bookings()
        decided = Counter((b.kind.value, b.state.value) for b in bookings if b.taken_by == self._me
                          and b.state in ENDINGS)
        total = CounterMetricFamily("bcd_booked_runs", "Booked runs this instance started, or found refused, "
                                    "missed or interrupted at their time, by kind.", labels=["kind", "result"])
        for kind in RUN_KINDS:
            for state in ENDINGS:
                total.add_metric([kind.value, state.value], decided[(kind.value, state.value)])
        yield total
        now = self._clock()
        coming = Counter(b.kind.value for b in bookings if b.state is BookingState.BOOKED and b.at > now)
        upcoming = GaugeMetricFamily("bcd_bookings_upcoming", "Runs and maintenance windows booked and not yet due "
                                     "or started, by kind.", labels=["kind"])
        for kind in BookingKind:
            upcoming.add_metric([kind.value], coming[kind.value])
        yield upcoming
