"""The C heap is trimmed after scrapes of /metrics on a timer, not after every scrape; what is garbage when the first
runs' survivors are frozen is collected, not frozen."""

from __future__ import annotations

import gc
import weakref

from bcd import heap
from bcd.heap import TrimTimer


def test_the_first_scrape_is_trimmed_at_once_then_at_most_once_a_minute() -> None:
    timer = TrimTimer(every=60.0)
    assert not timer.due(0, 1000.0)  # nothing scraped yet
    assert timer.due(1, 1001.0)  # the first scrape: trimmed at the next look
    assert not timer.due(1, 1002.0)  # no scrape since
    assert not timer.due(5, 1030.0)  # scrapes every 10 s: not each one
    assert not timer.due(6, 1060.9)
    assert timer.due(6, 1061.0)  # a minute after the last trim
    assert not timer.due(6, 2000.0)  # scrapes stopped: nothing to give back


def test_a_scrape_after_a_quiet_spell_is_trimmed_at_once() -> None:
    timer = TrimTimer(every=60.0)
    assert timer.due(1, 10.0)
    assert timer.due(2, 500.0)


def test_by_default_each_scrape_at_prometheus_intervals_is_trimmed() -> None:
    timer = TrimTimer()
    assert timer.due(1, 100.0)
    assert timer.due(2, 115.0)  # scraped every 15 s: each one
    assert not timer.due(3, 120.0)  # a burst of scrapes: not each one


class Left:
    """Stands for what a failed run left in a reference cycle (an MQTT client and its callbacks)."""

    def __init__(self) -> None:
        self.me = self


def test_garbage_at_the_freeze_of_the_survivors_is_collected_not_frozen() -> None:
    thresholds = gc.get_threshold()
    gc.disable()  # no collection of its own between the run's end and the freeze
    try:
        left = weakref.ref(Left())  # garbage at once, in a cycle: only a collection frees it
        heap.freeze_survivors()
        assert left() is None
    finally:
        gc.unfreeze()  # the test process is not a daemon
        gc.set_threshold(*thresholds)
        gc.enable()
