"""The maintenance calendar: windows from the config (`maintenance:`, one-off or repeating) and windows booked
through the operations layer (API, CLI, MQTT), each putting some sites of some services in maintenance from its
start to its end.

At a window's start the calendar carries out `StartMaintenance` for each covered site, by `calendar`, with the
window's name and reason and a duration reaching the window's end: the engine then ends it by itself at expiry
(journaled like any maintenance). A window is applied once per occurrence (again after a restart, as the
maintenance was persisted with the site's health: it is only extended). A window that would leave a service no
site outside maintenance is refused at booking (and skipped, with a warning, when a config window without
`force` would do so at its start because other sites are in maintenance by then).
Booked windows live in the store of bookings (bcd.bookings): the state directory, or etcd in a cluster, where
every instance sees them and applies them to its own sites; a restart forgets none.

On a cluster member, maintenance from now (`bcd maintenance SERVICE --for 2h`) is such a window, booked at this
moment (`start_now`), so every instance applies it. Ending maintenance (`end_now`, any instance) first cuts short
the booked windows in progress on those sites, and records the config windows in progress there as ended (a
booking `cancelled` from the start, named as the window, at its occurrence): each instance then ends the
maintenance such a window set on a site it no longer covers (`withdraw`), also one that was stopped meanwhile, and
none applies it there again. Cancelling a window in progress does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from bcd import calendar, events
from bcd.bookings import Booking, BookingKind, BookingState, BookingStore, BookingsUnavailable, new_id
from bcd.config.maintenance import WindowConfig
from bcd.durations import MAINTENANCE, format_duration
from bcd.events import Event, EventKind
from bcd.operations import (
    Accepted,
    BookMaintenance,
    EndMaintenance,
    Operations,
    Outcome,
    Refusal,
    Refused,
    StartMaintenance,
)
from bcd.view import EstateView

log = structlog.get_logger(__name__)
LOOK_AHEAD = 60.0  # seconds: the calendar wakes at least this often (a reload may have added a window)
WATCH_EVERY = 1.0  # seconds: how soon a window another instance booked is seen (the store's version is read)
SAME_END = 1.0  # seconds: a site's maintenance ending this close to a window's end is taken as that window's
BY = "calendar"


@dataclass(frozen=True, slots=True)
class Window:
    """One occurrence of a window: these sites of these services, from `start` to `end` (epoch seconds)."""

    name: str
    services: tuple[str, ...]
    sites: tuple[str, ...]
    start: float
    end: float
    reason: str
    by: str
    source: str  # "config" or "booked"
    every: str | None = None
    force: bool = False
    booking: str | None = None  # a booked window's booking id (`bcd bookings cancel ID`)

    def json(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "active": self.start <= now, "services": list(self.services),
                "sites": list(self.sites), "start": self.start, "end": self.end, "reason": self.reason,
                "by": self.by, "source": self.source, "every": self.every, "force": self.force,
                "booking": self.booking}

    @classmethod
    def booked(cls, booking: Booking) -> Window:
        return cls(str(booking.name), (str(booking.service),), booking.sites, booking.at, booking.end, booking.reason,
                   booking.by, "booked", force=booking.force, booking=booking.id)


def window_name(service: str, site: str | None, start: float) -> str:
    """A booked window's name: what it covers and when it starts."""
    where = service if site is None else f"{service}.{site}"
    return f"{where}@{datetime.fromtimestamp(start, UTC).strftime('%Y%m%dT%H%M%SZ')}"


def occurrence(spec: WindowConfig, now: float) -> tuple[float, float] | None:
    """The window's occurrence in progress at `now`, else its next one, else None (a one-off that ended)."""
    one_off = spec.first_start()
    if one_off is not None:
        start = one_off.timestamp()
        return (start, start + spec.duration) if start + spec.duration > now else None
    assert spec.every is not None
    zone = calendar.zone(spec.timezone)
    after = datetime.fromtimestamp(now - spec.duration, UTC)
    begin = calendar.parse(spec.every).next_after(after, zone)
    return None if begin is None else (begin.timestamp(), begin.timestamp() + spec.duration)


class MaintenanceCalendar:
    """Applies the calendar's windows through `operations`; books, lists and refuses windows."""

    def __init__(self, operations: Operations, estate: EstateView, emit: Callable[[Event], None],
                 store: BookingStore, clock: Callable[[], float] = time.time) -> None:
        self._operations = operations
        self._estate = estate
        self._emit = emit
        self._store = store
        self._clock = clock
        self._applied: set[tuple[str, float]] = set()
        self._wake = asyncio.Event()

    def windows(self, now: float | None = None) -> list[Window]:
        """Current and upcoming windows (each config window's current or next occurrence), by start."""
        now = self._clock() if now is None else now
        config = self._estate.config
        found = [Window.booked(booking) for booking in self._store.all() if booking.kind is BookingKind.MAINTENANCE
                 and booking.state is BookingState.BOOKED and booking.end > now]
        for name, spec in config.maintenance.items():
            times = occurrence(spec, now)
            if times is not None:
                services = tuple(service for service, conf in config.services.items() if spec.selects(service, conf))
                found.append(Window(name, services, tuple(spec.sites), *times, spec.reason, "config", "config",
                                    spec.every, spec.force))
        return sorted(found, key=lambda window: (window.start, window.name))

    def listing(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [window.json(now) for window in self.windows(now)]

    async def perform(self, intent: BookMaintenance) -> Outcome:
        """Book a window of one service (one site, or all of them) starting in the future."""
        now = self._clock()
        config = self._estate.config
        sites = list(config.services[intent.service].sites)
        if intent.site is not None and intent.site not in sites:
            return Refused(Refusal.NOT_FOUND, f"{intent.service} has no site {intent.site!r}")
        if intent.start <= now:
            return Refused(Refusal.CONFLICT, "the window must start in the future (for maintenance now, leave out "
                                             "`from`)")
        low, high = MAINTENANCE
        if not low <= intent.duration <= high:
            return Refused(Refusal.CONFLICT, f"the duration must be between {format_duration(low)} and "
                                             f"{format_duration(high)}")
        covered = tuple(sites if intent.site is None else [intent.site])
        name = window_name(intent.service, intent.site, intent.start)
        if any(window.name == name for window in self.windows(now) if window.source == "booked"):
            return Refused(Refusal.CONFLICT, f"{name} is already booked")
        booking = Booking(new_id(), BookingKind.MAINTENANCE, intent.start, intent.by, intent.reason, now,
                          service=intent.service, site=intent.site, sites=covered, duration=intent.duration,
                          name=name, force=intent.force)
        window = Window.booked(booking)
        if not intent.force:
            blocked = self.leaves_no_site(window, now)
            if blocked is not None:
                return Refused(Refusal.CONFLICT, blocked)
        try:
            if not await self._store.add(booking):
                return Refused(Refusal.CONFLICT, f"booking {booking.id} exists already: try again")
        except BookingsUnavailable as exc:
            return Refused(Refusal.UNAVAILABLE, f"the booking cannot be stored: {exc}")
        self._wake.set()
        self._journal(EventKind.MAINTENANCE_BOOKED, window, f"{intent.by}: {intent.reason}", now)
        return Accepted(f"maintenance of {intent.service} at {', '.join(covered)} booked as {name}",
                        sites=list(covered), until=window.end)

    async def start_now(self, intent: StartMaintenance) -> Outcome:
        """Maintenance from now, on every instance: a window booked at this moment and applied here at once. It
        replaces the windows in progress on those sites (as maintenance set again replaces what was set)."""
        now = self._clock()
        covered = self._sites(intent.service, intent.site)
        if isinstance(covered, Refused):
            return covered
        if intent.duration <= 0:
            return Refused(Refusal.CONFLICT, "the duration must be positive")
        booking = Booking(new_id(), BookingKind.MAINTENANCE, now, intent.by, intent.reason, now,
                          service=intent.service, site=intent.site, sites=covered, duration=intent.duration,
                          name=self._name(intent.service, intent.site, now), force=True)
        try:
            if not await self._store.add(booking):
                return Refused(Refusal.CONFLICT, f"booking {booking.id} exists already: try again")
        except BookingsUnavailable as exc:  # still silence this instance's alerts and automation: say so
            return await self._here_only(intent, str(exc))
        window = Window.booked(booking)
        self._applied.add((window.name, window.start))
        refused = await self._apply(window, now)
        if refused is not None:  # not set here (the journal cannot be written): nowhere, then
            with contextlib.suppress(BookingsUnavailable):
                await self._store.change(booking, replace(booking, state=BookingState.CANCELLED, decided_at=now,
                                                          detail=f"not set on the instance asked: {refused.reason}"))
            return refused
        replaced = await self._cut_short(intent.service, covered, intent.by, now, keep=booking.id)
        if isinstance(replaced, Refused):
            log.warning("maintenance_not_replaced", window=window.name, reason=replaced.reason)
        return Accepted(f"maintenance of {', '.join(covered)} for {intent.duration:g}s, on every instance "
                        f"(window {window.name}, booking {booking.id})", sites=list(covered), until=window.end,
                        booking=booking.to_json())

    async def end_now(self, intent: EndMaintenance) -> Outcome:
        """End maintenance here, after cutting short the booked windows in progress on those sites (so that every
        instance ends what they set, and none sets it again after a restart)."""
        covered = self._sites(intent.service, intent.site)
        if isinstance(covered, Refused):
            return covered
        now = self._clock()
        cut = await self._cut_short(intent.service, covered, intent.by, now)
        if not isinstance(cut, Refused):
            cut = await self._end_config_windows(intent.service, covered, intent.by, now)
        if isinstance(cut, Refused):
            return await self._here_only(intent, cut.reason) if cut.kind is Refusal.UNAVAILABLE else cut
        return await self._operations.perform(intent)

    async def _here_only(self, intent: StartMaintenance | EndMaintenance, why: str) -> Outcome:
        """Maintenance started or ended on this instance alone, the store of bookings (etcd) being out of reach:
        the answer and the log say that the others do not know."""
        outcome = await self._operations.perform(intent)
        if not isinstance(outcome, Accepted):
            return outcome
        log.warning("maintenance_here_only", service=intent.service, site=intent.site, reason=why,
                    hint="the other instances do not know: set or end it on each, or again once etcd answers")
        return replace(outcome, detail=f"{outcome.detail}, on this instance only ({why})")

    def _sites(self, service: str, site: str | None) -> tuple[str, ...] | Refused:
        sites = tuple(self._estate.config.services[service].sites)
        if site is None:
            return sites
        return (site,) if site in sites else Refused(Refusal.NOT_FOUND, f"{service} has no site {site!r}")

    def _name(self, service: str, site: str | None, start: float) -> str:
        """A booked window's name: what it covers and when it starts (its booking's id too, for a clash)."""
        name = window_name(service, site, start)
        taken = {booking.name for booking in self._store.all() if booking.kind is BookingKind.MAINTENANCE}
        return name if name not in taken else f"{name}-{new_id()}"

    async def _cut_short(self, service: str, sites: tuple[str, ...], by: str, now: float,
                         keep: str | None = None) -> int | Refused:
        """Take `sites` out of the booked windows of `service` in progress (but `keep`); one left covering none is
        cancelled. How many windows changed, or the refusal (the store could not be written: stop there)."""
        changed = 0
        for booking in self._store.all():
            if (booking.kind is not BookingKind.MAINTENANCE or booking.state is not BookingState.BOOKED
                    or booking.service != service or booking.id == keep or not booking.at <= now < booking.end):
                continue
            left = tuple(site for site in booking.sites if site not in sites)
            if left == booking.sites:
                continue
            new = (replace(booking, sites=left, ended_by=by) if left else replace(
                booking, state=BookingState.CANCELLED, decided_at=now, detail=f"ended by {by}", ended_by=by))
            if (refused := await self._stored(booking.name, self._store.change(booking, new))) is not None:
                return refused
            changed += 1
        return changed

    async def _end_config_windows(self, service: str, sites: tuple[str, ...], by: str, now: float) -> int | Refused:
        """Record in the store that the config windows in progress end now at `sites` of `service` (a booking
        `cancelled` from the start, named as the window, at its occurrence: every instance then ends it, and none
        applies it there again, even after a restart). How many windows, or the refusal."""
        changed = 0
        for window in self.windows(now):
            ended = tuple(site for site in sites if site in window.sites)
            if window.source != "config" or not window.start <= now < window.end or service not in window.services:
                continue
            old = self._ended(window, service)
            if not ended or (old is not None and set(ended) <= set(old.sites)):
                continue
            new = Booking(new_id(), BookingKind.MAINTENANCE, window.start, by, f"config window {window.name} ended",
                          now, state=BookingState.CANCELLED, service=service, sites=ended,
                          duration=window.end - window.start, name=window.name, decided_at=now,
                          detail=f"ended by {by}", ended_by=by)
            write = self._store.add(new) if old is None else self._store.change(old, replace(
                old, sites=tuple(sorted({*old.sites, *ended})), decided_at=now, ended_by=by))
            if (refused := await self._stored(window.name, write)) is not None:
                return refused
            changed += 1
        return changed

    @staticmethod
    async def _stored(name: str | None, write: Awaitable[bool]) -> Refused | None:
        """A window's booking written to the store (a compare-and-swap): None, or why not."""
        try:
            if await write:
                return None
        except BookingsUnavailable as exc:
            return Refused(Refusal.UNAVAILABLE, f"window {name} cannot be ended for every instance: {exc}")
        return Refused(Refusal.CONFLICT, f"window {name} changed meanwhile: try again")

    def _ended(self, window: Window, service: str) -> Booking | None:
        """The record that config window `window` (this occurrence) was ended at some sites of `service`."""
        return next((booking for booking in self._store.all() if booking.kind is BookingKind.MAINTENANCE
                     and booking.state is BookingState.CANCELLED and booking.name == window.name
                     and booking.at == window.start and booking.service == service), None)

    async def withdraw(self, now: float) -> None:
        """End here the maintenance that a booked window in progress set on a site it no longer covers (cut short,
        or cancelled, on any instance; also while this one was stopped): the site's maintenance names the window
        and ends with it."""
        for booking in self._store.all():
            if booking.kind is not BookingKind.MAINTENANCE or booking.service is None or booking.name is None:
                continue
            config = self._estate.config.services.get(booking.service)
            if config is None or not booking.at <= now < booking.end:
                continue
            gone = booking.sites if booking.state is not BookingState.BOOKED else tuple(
                site for site in config.sites if site not in booking.sites)
            for site in gone:
                health = self._estate.sites.get((booking.service, site))
                if (health is None or health.maintenance_until is None
                        or abs(health.maintenance_until - booking.end) > SAME_END
                        or f"window {booking.name}: " not in health.maintenance_reason):
                    continue
                outcome = await self._operations.perform(EndMaintenance(booking.service, site,
                                                                        booking.ended_by or BY))
                said = outcome.detail if isinstance(outcome, Accepted) else outcome.reason
                log.info("maintenance_window_withdrawn", window=booking.name, service=booking.service, site=site,
                         by=booking.ended_by, outcome=said)

    def leaves_no_site(self, window: Window, now: float, *, upcoming: bool = True) -> str | None:
        """Why `window` would leave one of its services no site outside maintenance (with the windows
        overlapping it, only those already started unless `upcoming`, and the maintenance already set), or
        None."""
        others = [other for other in self.windows(now) if other.name != window.name
                  and other.start < window.end and window.start < other.end and (upcoming or other.start <= now)]
        for service in window.services:
            sites = set(self._estate.config.services[service].sites)
            down = {site: f"window {window.name}" for site in window.sites}
            for other in others:
                if service in other.services:
                    down.update({site: f"window {other.name}" for site in other.sites if site not in down})
            for site in sites - set(down):
                health = self._estate.sites.get((service, site))
                until = None if health is None else health.maintenance_until
                if until is not None and until > window.start:
                    down[site] = "maintenance already set"
            if sites <= set(down):
                because = ", ".join(f"{site} ({why})" for site, why in sorted(down.items()) if site in sites)
                return (f"{service} would have no site outside maintenance: {because}; "
                        "force it if that is meant")
        return None

    async def run(self, ready: asyncio.Event) -> None:
        """Apply every window whose start has come; sleep until the next start (at most LOOK_AHEAD)."""
        ready.set()
        while True:
            self._wake.clear()
            wait = await self.apply_due(self._clock())
            seen = self._store.version
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    while self._store.version == seen and not self._wake.is_set():  # another instance's booking
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), WATCH_EVERY)

    async def apply_due(self, now: float) -> float:
        """Apply each window whose start has come (once per occurrence); the seconds until the next start
        (at most LOOK_AHEAD)."""
        windows = self.windows(now)
        for window in windows:
            if window.start <= now and (window.name, window.start) not in self._applied:
                self._applied.add((window.name, window.start))
                await self._apply(window, now)
        await self.withdraw(now)
        return min([LOOK_AHEAD, *(window.start - now for window in windows if window.start > now)])

    async def _apply(self, window: Window, now: float) -> Refused | None:
        """Put the window's sites in maintenance here; the first refusal (each is logged), or None."""
        # at its start, a window gives way only to what is in maintenance now (the later of two overlapping
        # windows is the one refused)
        if not window.force and (blocked := self.leaves_no_site(window, now, upcoming=False)) is not None:
            self._journal(EventKind.MAINTENANCE_WINDOW_REFUSED, window, f"window {window.name}: {blocked}", now)
            return Refused(Refusal.CONFLICT, blocked)
        first = None
        for service, site in self._covered(window):
            intent = StartMaintenance(service, site, window.end - now, window.by if window.source == "booked" else BY,
                                      f"window {window.name}: {window.reason}")
            outcome = await self._operations.perform(intent)
            if isinstance(outcome, Refused):
                first = first or outcome
                log.warning("maintenance_window_failed", window=window.name, service=service, site=site,
                            reason=outcome.reason)
        log.info("maintenance_window_started", window=window.name, until=window.end)
        return first

    def _journal(self, kind: EventKind, window: Window, reason: str, now: float) -> None:
        """One event (a window of several services names none: its reason names the one at fault)."""
        data = events.MaintenanceWindow(window.name, window.sites, window.start, window.end, window.by)
        service = window.services[0] if len(window.services) == 1 else None
        self._emit(Event(kind, now, service, None, reason, data))

    def _covered(self, window: Window) -> Iterator[tuple[str, str]]:
        """The sites the window puts in maintenance: not those where a config window was ended (`end_now`)."""
        services = self._estate.config.services
        for service in window.services:
            ended = () if window.source != "config" or (found := self._ended(window, service)) is None else found.sites
            if service in services:
                yield from ((service, site) for site in window.sites if site in services[service].sites
                            and site not in ended)
