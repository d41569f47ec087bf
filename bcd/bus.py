"""In-process fan-out of events to the outputs: bounded per subscriber, never blocks the core."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bcd.events import Event


class Subscription:
    """One consumer's bounded queue; what it cannot keep up with is dropped and counted."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def get(self) -> Event:
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()


class Bus:
    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def publish(self, event: Event) -> None:
        for subscriber in self._subscribers:
            subscriber.offer(event)

    def subscribe(self, name: str, size: int = 1000) -> Subscription:
        subscription = Subscription(name, size)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    @asynccontextmanager
    async def subscription(self, name: str, size: int = 1000) -> AsyncIterator[Subscription]:
        subscription = self.subscribe(name, size)
        try:
            yield subscription
        finally:
            self.unsubscribe(subscription)
