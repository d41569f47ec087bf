"""The in-process bus: fan-out, bounded queues, drops counted."""

from __future__ import annotations

from bcd.bus import Bus
from bcd.events import Event, EventKind, SiteTransition


def event(n: int) -> Event:
    return Event(EventKind.SITE_TRANSITION, float(n), "svc", "a", f"event {n}", SiteTransition("up", "down"))


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = Bus()
    first, second = bus.subscribe("a"), bus.subscribe("b")
    for n in range(3):
        bus.publish(event(n))
    assert [(await first.get()).reason for _ in range(3)] == ["event 0", "event 1", "event 2"]
    assert [(await second.get()).reason for _ in range(3)] == ["event 0", "event 1", "event 2"]


async def test_a_slow_subscriber_loses_events_counted_and_never_blocks_publish() -> None:
    bus = Bus()
    slow = bus.subscribe("slow", size=2)
    for n in range(5):
        bus.publish(event(n))
    assert slow.dropped == 3
    assert [(await slow.get()).reason for _ in range(2)] == ["event 0", "event 1"]


async def test_subscription_context_unsubscribes() -> None:
    bus = Bus()
    async with bus.subscription("temp") as sub:
        bus.publish(event(1))
        assert (await sub.get()).reason == "event 1"
    bus.publish(event(2))
    assert sub.queue.empty()
