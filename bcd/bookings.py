"""One store of booked things: maintenance windows booked for later (bcd.maintenance_calendar) and runs booked
for a set time — a failover, a failback or a recovery plan (bcd.booked_runs).

A booking is a `Booking` value: what (its kind and target), when (`at`, epoch seconds), who and why, and its
state. A lone instance keeps its bookings in its state directory (the journal's SQLite file, table `bookings`):
they survive a restart. A cluster member keeps them in etcd under `/bcd/<cluster>/bookings/<id>`, read through
the coordinator's watch cache (no polling), so every instance sees the same set and a restart of any of them
loses nothing. Every change is a compare-and-swap: of two instances changing one booking at once (say, both
starting the same booked run), exactly one succeeds.

States: `booked` → `starting` (an instance took it) → `started` or `refused` (a guard said no at its time);
`booked` → `missed` (its time passed, beyond the grace, while no instance ran), `cancelled`; `starting` →
`interrupted` (the daemon that took it stopped before it knew the outcome: nobody starts it again).
A maintenance booking stays `booked` (every instance applies it to its own sites at its start) until it ends,
unless cancelled. One in progress can be cut short (bcd.maintenance_calendar): its `sites` lose those whose
maintenance was ended (`cancelled` once none is left), `ended_by` names who, and every instance ends it on its own.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from bcd.coordination.base import CoordinationUnavailable, Coordinator
from bcd.journal import Journal, JournalWriteError
from bcd.journal.ledger import Write

SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (id TEXT PRIMARY KEY, at REAL NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL)
"""
GROUP = "bookings"  # the etcd group under the cluster prefix
SETTLE = 2.0  # seconds a cluster write waits for the watch to show it here (read your writes)
SETTLE_STEP = 0.01
KEEP = 30 * 86400.0  # seconds a booking is kept once it is over (its events stay in the journals)


class BookingKind(StrEnum):
    MAINTENANCE = "maintenance"
    FAILOVER = "failover"
    FAILBACK = "failback"
    PLAN = "plan"


class BookingState(StrEnum):
    BOOKED = "booked"
    STARTING = "starting"
    STARTED = "started"
    REFUSED = "refused"
    MISSED = "missed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"


RUN_KINDS = (BookingKind.FAILOVER, BookingKind.FAILBACK, BookingKind.PLAN)
ENDINGS = (BookingState.STARTED, BookingState.REFUSED, BookingState.MISSED, BookingState.INTERRUPTED)


def new_id() -> str:
    """A booking's id: 8 random hex digits (a clash is refused by the store: add() says False)."""
    return secrets.token_hex(4)


class BookingsUnavailable(Exception):
    """The store cannot be written (the journal, or etcd): nothing was changed."""


@dataclass(frozen=True, slots=True)
class Booking:
    """One booked thing. `service` (or `plan`) is its target; `site`/`duration`/`name` a maintenance window's;
    `to`/`force` a run's. `taken_by` is the instance that started it (or marked it missed); `run_id` and
    `plan_run` what it started; `detail` the outcome's reason; `ended_by` who cut a maintenance window short."""

    id: str
    kind: BookingKind
    at: float
    by: str
    reason: str
    booked_at: float
    state: BookingState = BookingState.BOOKED
    service: str | None = None
    plan: str | None = None
    site: str | None = None
    sites: tuple[str, ...] = ()
    to: str | None = None
    duration: float | None = None
    name: str | None = None
    force: bool = False
    taken_by: str | None = None
    decided_at: float | None = None
    detail: str = ""
    run_id: int | None = None
    plan_run: int | None = None
    ended_by: str | None = None

    @property
    def target(self) -> str:
        return str(self.plan if self.kind is BookingKind.PLAN else self.service)

    @property
    def end(self) -> float:
        """A maintenance window's end (a run's booking: its time)."""
        return self.at + (self.duration or 0.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sites"] = list(self.sites)
        return data

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Booking:
        """The booking `to_json` made; ValueError (or KeyError, TypeError) when it is not one."""
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        booking = cls(**known)
        return replace(booking, kind=BookingKind(booking.kind), state=BookingState(booking.state),
                       sites=tuple(booking.sites))


def decode(raw: bytes) -> Booking | None:
    """A booking from the store's bytes; None when they are not one (logged by the caller)."""
    try:
        data = json.loads(raw)
        return Booking.from_json(data) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


class BookingStore(Protocol):
    """Where bookings live. `all()` answers from memory (no I/O); writes are compare-and-swap. `ready`: what
    `all()` says is the store's (a cluster member: etcd answers and the watch has read it)."""

    @property
    def ready(self) -> bool: ...

    @property
    def version(self) -> int:
        """Grows with every change (ours or another instance's)."""
        ...

    def all(self) -> list[Booking]: ...

    def get(self, booking_id: str) -> Booking | None: ...

    async def add(self, booking: Booking) -> bool:
        """Store a new booking; False if its id is taken. Raises BookingsUnavailable."""
        ...

    async def change(self, old: Booking, new: Booking) -> bool:
        """Replace `old` by `new` only if the store still holds `old`; False otherwise (someone changed it).
        Raises BookingsUnavailable."""
        ...

    async def prune(self, before: float) -> int:
        """Remove the bookings over before `before` (`over`); how many. Raises BookingsUnavailable."""
        ...


def over(booking: Booking) -> float | None:
    """When a booking was over: decided (started, refused, missed, interrupted, cancelled), or a maintenance
    window that has ended; None while it is to come, in progress, or `starting` (an operator looks at that one)."""
    if booking.state is BookingState.BOOKED:
        return booking.end if booking.kind is BookingKind.MAINTENANCE else None
    return None if booking.state is BookingState.STARTING else booking.decided_at or booking.at


class LocalBookings:
    """A lone instance's bookings: the journal's `bookings` table, held in memory too (this process is its only
    writer: the state directory's lock). Each change is committed with a full sync before it counts."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        journal.create([SCHEMA])
        journal.cover("bookings")  # rows a bcd wrote before the chain covered bookings
        self._bookings: dict[str, Booking] = {}
        for (data,) in journal.execute("SELECT data FROM bookings ORDER BY at").fetchall():
            booking = decode(data.encode())
            if booking is not None:
                self._bookings[booking.id] = booking
        self._version = 0

    @property
    def ready(self) -> bool:
        return True

    @property
    def version(self) -> int:
        return self._version

    def all(self) -> list[Booking]:
        return list(self._bookings.values())

    def get(self, booking_id: str) -> Booking | None:
        return self._bookings.get(booking_id)

    async def add(self, booking: Booking) -> bool:
        if booking.id in self._bookings:
            return False
        self._write(Write("INSERT INTO bookings (id, at, state, data) VALUES (?, ?, ?, ?)",
                          (booking.id, booking.at, booking.state.value, booking.encode().decode()), "bookings"))
        self._bookings[booking.id] = booking
        self._version += 1
        return True

    async def change(self, old: Booking, new: Booking) -> bool:
        if self._bookings.get(old.id) != old:
            return False
        self._write(Write("UPDATE bookings SET at = ?, state = ?, data = ? WHERE id = ?",
                          (new.at, new.state.value, new.encode().decode(), new.id), "bookings", "id = ?", (new.id,)))
        self._bookings[new.id] = new
        self._version += 1
        return True

    async def prune(self, before: float) -> int:
        """Delete the rows of the bookings over before `before`, chained as deleted on purpose (so `bcd journal
        verify` expects them gone), in one commit."""
        gone = [booking.id for booking in self._bookings.values() if (when := over(booking)) is not None
                and when < before]
        if not gone:
            return 0
        with _writing():
            self._journal.delete("bookings", f"id IN ({', '.join('?' * len(gone))})", tuple(gone), time.time())
        for booking_id in gone:
            del self._bookings[booking_id]
        self._version += 1
        return len(gone)

    def _write(self, write: Write) -> None:
        """Committed with a full sync and chained in the journal's ledger (bcd.journal.ledger), or
        BookingsUnavailable."""
        with _writing():
            self._journal.apply(write, time.time())


@contextmanager
def _writing() -> Iterator[None]:
    """A write to the journal: its failure raised as BookingsUnavailable."""
    try:
        yield
    except (sqlite3.Error, JournalWriteError) as exc:
        raise BookingsUnavailable(f"the journal cannot be written: {exc}") from exc


class ClusterBookings:
    """A cluster member's bookings: `bookings/<id>` in etcd, read from the coordinator's watch (parsed again only
    when a booking's bytes changed), written by compare-and-swap on the key's revision."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._parsed: dict[str, tuple[bytes, int, Booking | None]] = {}  # id -> (bytes, revision, booking)
        self._seen = -1

    @property
    def ready(self) -> bool:
        return self._coordinator.available

    @property
    def version(self) -> int:
        return self._coordinator.entries_version(GROUP)

    def _current(self) -> dict[str, tuple[bytes, int, Booking | None]]:
        version = self.version
        if version != self._seen:
            parsed = {}
            for key, (raw, revision) in self._coordinator.entries(GROUP).items():
                known = self._parsed.get(key)
                booking = known[2] if known is not None and known[0] == raw else decode(raw)
                parsed[key] = (raw, revision, booking)
            self._parsed, self._seen = parsed, version
        return self._parsed

    def all(self) -> list[Booking]:
        return [booking for _, _, booking in self._current().values() if booking is not None]

    def get(self, booking_id: str) -> Booking | None:
        found = self._current().get(booking_id)
        return None if found is None else found[2]

    async def add(self, booking: Booking) -> bool:
        return await self._swap(booking, 0)

    async def change(self, old: Booking, new: Booking) -> bool:
        found = self._current().get(old.id)
        if found is None or found[2] != old:
            return False
        return await self._swap(new, found[1])

    async def prune(self, before: float) -> int:
        """Remove the bookings over before `before`, each only if unchanged since this instance read it (of two
        instances pruning at once, one removes it)."""
        removed = 0
        for key, (_, revision, booking) in list(self._current().items()):
            when = None if booking is None else over(booking)
            if when is None or when >= before:
                continue
            try:
                if await self._coordinator.remove(f"{GROUP}/{key}", revision):
                    removed += 1
            except CoordinationUnavailable as exc:
                raise BookingsUnavailable(str(exc)) from exc
        return removed

    async def _swap(self, booking: Booking, revision: int) -> bool:
        """The swap, then (read your writes) a wait of at most SETTLE seconds for the watch to bring it back."""
        raw = booking.encode()
        try:
            if not await self._coordinator.swap(f"{GROUP}/{booking.id}", raw, revision):
                return False
        except CoordinationUnavailable as exc:
            raise BookingsUnavailable(str(exc)) from exc
        for _ in range(int(SETTLE / SETTLE_STEP)):  # the watch has no per-key signal to wait on: look every 10 ms
            if self._coordinator.entries(GROUP).get(booking.id, (b"", 0))[0] == raw:
                break
            await asyncio.sleep(SETTLE_STEP)
        return True
