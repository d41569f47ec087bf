"""Runs booked for a set time — a failover, a failback, a recovery plan — and what happens at that time.

Booking (`bcd failover SERVICE --at …`, the API, MQTT) reaches here through `bcd.operations` (a `Transfer` or
`RunPlan` with `at`, authorised there like the run itself): the time must be in the future (at most
MAX_AHEAD), the service or plan must exist, `to` must be one of the service's sites. The booking is stored
(bcd.bookings: the state directory, or etcd in a cluster) and journaled (`run_booked`) before it is accepted.

At its time the booking is taken (compare-and-swap `booked` → `starting`: in a cluster exactly one instance,
and never a witness, wins) and carried out through operations like any operator's request — the same guards,
the same per-service lock and fencing — on behalf of who booked it. Accepted: `started`, journaled
(`booked_run_started`). Refused: `refused` with the guard's reason, journaled (`booked_run_refused`), logged
as a warning and counted (`bcd_booked_runs_total{result="refused"}`: the alert rule BcdBookedRunRefused).
A booking whose time passed while no instance ran (the daemon was down) starts late within `bookings.grace`
(5 minutes by default); after that it is `missed`, with the reason, and alerted the same way. A daemon that
stops between taking a booking and knowing its outcome finds it `starting` at its next start: it is marked
`interrupted` (nothing starts it again; the runs it may have started are in `bcd runs`).

Maintenance windows are booked through the calendar (bcd.maintenance_calendar) into the same store; here they
are listed and cancelled with the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from bcd import events
from bcd.authority import Action
from bcd.bookings import (
    KEEP,
    RUN_KINDS,
    Booking,
    BookingKind,
    BookingState,
    BookingStore,
    BookingsUnavailable,
    ClusterBookings,
    LocalBookings,
    new_id,
    over,
)
from bcd.cluster import ClusterLink
from bcd.durations import format_duration
from bcd.events import Emit, Event, EventKind
from bcd.journal import Journal
from bcd.maintenance_calendar import MaintenanceCalendar
from bcd.model import RunKind
from bcd.operations import Accepted, CancelBooking, Operations, Outcome, Refusal, Refused, RunPlan, Transfer
from bcd.outputs.metrics import Metrics
from bcd.outputs.metrics.bookings import BookingCollector
from bcd.view import EstateView

log = structlog.get_logger("bcd.bookings")

MAX_AHEAD = 366 * 86400.0  # seconds: the latest a run may be booked for
WATCH_EVERY = 1.0  # seconds: the longest the loop sleeps (a booking made elsewhere is seen within this)
LISTED = 200  # bookings listed: every one to come or in progress, then the latest over
PRUNE_EVERY = 3600.0  # seconds between two prunes of the bookings over for KEEP (bcd.bookings), the first at start


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BookedRuns:
    """Books runs, starts them at their time (once, cluster-wide), lists and cancels every booking. `me` names
    this instance in `taken_by`; `executor` False (a cluster witness): it never takes a booked run."""

    def __init__(self, operations: Operations, estate: EstateView, emit: Emit,
                 store: BookingStore, *, me: str, executor: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self._operations = operations
        self._estate = estate
        self._emit = emit
        self.store = store
        self.me = me
        self._executor = executor
        self._clock = clock
        self._wake = asyncio.Event()
        self._recovered = False
        self._pruned_at: float | None = None
        self._unsaved: dict[str, tuple[Booking, Booking]] = {}  # id -> (ours as stored, its outcome to store)
        self.calendar: MaintenanceCalendar | None = None  # run beside the booked runs (`make`)

    # -- operations' side ------------------------------------------------------------------------------
    async def book(self, intent: Transfer | RunPlan) -> Outcome:
        """Store a booking of `intent` at `intent.at`: Accepted (its id in the detail) or Refused with why."""
        assert intent.at is not None
        now = self._clock()
        refused = self._check(intent, intent.at, now)
        if refused is not None:
            return refused
        booking = _booking_of(intent, intent.at, now)
        same = [b.id for b in self.store.all() if b.state is BookingState.BOOKED and b.kind is booking.kind
                and b.target == booking.target and b.at == booking.at]
        if same:
            return Refused(Refusal.CONFLICT, f"{booking.kind} of {booking.target} at {iso(booking.at)} is already "
                                             f"booked ({same[0]})")
        try:
            if not await self.store.add(booking):
                return Refused(Refusal.CONFLICT, f"booking id {booking.id} is taken: try again")
        except BookingsUnavailable as exc:
            return Refused(Refusal.UNAVAILABLE, f"the booking cannot be stored: {exc}")
        self._journal(EventKind.RUN_BOOKED, booking, f"{booking.by}: {booking.reason}")
        self._wake.set()
        return Accepted(f"booking {booking.id}: {booking.kind} of {booking.target} at {iso(booking.at)}",
                        booking=booking.to_json())

    def _check(self, intent: Transfer | RunPlan, at: float, now: float) -> Refused | None:
        if intent.dry_run:
            return Refused(Refusal.CONFLICT, "a dry run is not booked: run it now (leave out `at`)")
        if at <= now:
            return Refused(Refusal.CONFLICT, f"the time {iso(at)} has passed (now {iso(now)}): book a time to come")
        if at > now + MAX_AHEAD:
            return Refused(Refusal.CONFLICT, f"{iso(at)} is more than 366 days ahead")
        config = self._estate.config
        if isinstance(intent, RunPlan):
            return None if intent.plan in config.plans else Refused(Refusal.NOT_FOUND, f"no plan named {intent.plan!r}")
        if intent.to is not None and intent.to not in config.services[intent.service].sites:
            return Refused(Refusal.NOT_FOUND, f"{intent.service} has no site {intent.to!r}")
        return None

    def target(self, booking: str) -> tuple[str | None, Action] | None:
        found = self.store.get(booking)
        if found is None:
            return None
        return found.service, Action.MAINTENANCE if found.kind is BookingKind.MAINTENANCE else Action.TRANSFER

    async def cancel(self, intent: CancelBooking) -> Outcome:
        """Cancel a booking not yet due, or a maintenance window in progress (every instance ends it)."""
        booking = self.store.get(intent.booking)
        if booking is None:
            return Refused(Refusal.NOT_FOUND, f"no booking {intent.booking!r}")
        now = self._clock()
        started = booking.kind is BookingKind.MAINTENANCE and booking.at <= now < booking.end
        if booking.state is not BookingState.BOOKED or (booking.at <= now and not started):
            what = booking.state if booking.state is not BookingState.BOOKED else "due"
            return Refused(Refusal.CONFLICT, f"booking {booking.id} is {what}: only a booking to come, or a "
                                             "maintenance window in progress, can be cancelled")
        why = f"cancelled by {intent.by}" + (f": {intent.reason}" if intent.reason else "")
        cancelled = replace(booking, state=BookingState.CANCELLED, decided_at=now, detail=why,
                            ended_by=intent.by if started else None)
        try:
            if not await self.store.change(booking, cancelled):
                return Refused(Refusal.CONFLICT, f"booking {booking.id} changed meanwhile: look again")
        except BookingsUnavailable as exc:
            return Refused(Refusal.UNAVAILABLE, f"the booking cannot be changed: {exc}")
        self._journal(EventKind.BOOKING_CANCELLED, cancelled, f"booking {booking.id} {why}")
        if started and self.calendar is not None:  # ended here now; every other instance ends it on its own
            await self.calendar.withdraw(now)
        done = "ended on every instance" if started else "cancelled"
        return Accepted(f"booking {booking.id} ({booking.kind} of {booking.target} at {iso(booking.at)}) {done}",
                        booking=cancelled.to_json())

    def listing(self, booking: str | None = None) -> list[dict[str, Any]]:
        """Every booking to come or in progress (by time), then the latest over (decided, or a maintenance window
        that has ended), LISTED at most; or the one named."""
        if booking is not None:
            found = self.store.get(booking)
            return [] if found is None else [found.to_json()]
        now = self._clock()
        bookings = sorted(self.store.all(), key=lambda b: (b.at, b.id))
        ends = {b.id: over(b) for b in bookings}
        coming = [b for b in bookings if (ends[b.id] or now) >= now]
        past = sorted((b for b in bookings if (ends[b.id] or now) < now), key=lambda b: ends[b.id] or 0.0,
                      reverse=True)
        return [b.to_json() for b in [*coming, *past][:LISTED]]

    # -- at their time -----------------------------------------------------------------------------------
    async def run(self, ready: asyncio.Event) -> None:
        """Its lifetime (bcd.lifetime): the calendar's loop beside `loop()`, until cancelled."""
        async with asyncio.TaskGroup() as group:
            if self.calendar is not None:
                applying = asyncio.Event()
                group.create_task(self.calendar.run(applying), name="maintenance-calendar")
                await applying.wait()
            group.create_task(self.loop(), name="booked-runs")
            ready.set()

    async def loop(self) -> None:
        """Start each booked run at its time; wake at the next one, or within WATCH_EVERY."""
        while True:
            self._wake.clear()
            try:
                wait = await self.start_due(self._clock())
            except Exception:  # the one catch-all of this task: log, keep the loop alive
                log.exception("booked_runs_failed")
                wait = WATCH_EVERY
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wait))

    async def start_due(self, now: float) -> float:
        """Take and start each run booked for now or before (or mark it missed); the seconds until the next."""
        if not self.store.ready:
            return WATCH_EVERY
        if not self._recovered:
            await self._recover(now)
        for old, new in list(self._unsaved.values()):
            await self._save(old, new)
        await self._prune(now)
        grace = self._estate.config.bookings.grace
        due = sorted((b for b in self.store.all() if b.kind in RUN_KINDS and b.state is BookingState.BOOKED
                      and b.at <= now), key=lambda b: b.at)
        for booking in due if self._executor else []:
            late = now - booking.at
            if late > grace:
                why = (f"missed: its time {iso(booking.at)} passed {late:.0f}s ago while no bcd ran it (grace "
                       f"{grace:g}s)")
                await self._decide(booking, replace(booking, state=BookingState.MISSED), why)
            else:
                await self._start(booking)
        later = [b.at - now for b in self.store.all() if b.state is BookingState.BOOKED and b.at > now]
        return min([WATCH_EVERY, *later])

    async def _prune(self, now: float) -> None:
        """The bookings over for KEEP leave the store (a cluster's etcd, or a lone instance's journal)."""
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now
        try:
            removed = await self.store.prune(now - KEEP)
        except BookingsUnavailable as exc:
            log.warning("bookings_not_pruned", reason=str(exc), hint=f"tried again in {PRUNE_EVERY:g}s")
            return
        if removed:
            log.info("bookings_pruned", removed=removed, kept_for=format_duration(KEEP))

    async def _recover(self, now: float) -> None:
        """Bookings this instance took and never settled (it stopped meanwhile): interrupted."""
        self._recovered = True
        for booking in self.store.all():
            if booking.state is BookingState.STARTING and booking.taken_by == self.me:
                why = ("interrupted: bcd stopped while starting it; nothing starts it again (`bcd runs` shows what "
                       "it may have started)")
                await self._save(booking, replace(booking, state=BookingState.INTERRUPTED, decided_at=now,
                                                  detail=why))
                self._announce(EventKind.BOOKED_RUN_REFUSED, booking, BookingState.INTERRUPTED, why)

    async def _start(self, booking: Booking) -> None:
        taken = replace(booking, state=BookingState.STARTING, taken_by=self.me, decided_at=self._clock())
        try:
            if not await self.store.change(booking, taken):
                return  # another instance took it
        except BookingsUnavailable as exc:
            log.warning("booked_run_not_taken", booking=booking.id, reason=str(exc), hint="tried again shortly")
            return
        outcome = await self._operations.perform(_intent_of(booking))
        if isinstance(outcome, Refused):
            await self._settle(taken, replace(taken, state=BookingState.REFUSED), f"refused: {outcome.reason}")
            return
        plan_run = outcome.plan_run.id if outcome.plan_run is not None else None
        run_id = outcome.run.id if outcome.run is not None else None
        ended = replace(taken, state=BookingState.STARTED, run_id=run_id, plan_run=plan_run)
        await self._settle(taken, ended, outcome.detail)

    async def _decide(self, booking: Booking, outcome: Booking, why: str) -> None:
        """Mark a booking nobody took (missed) as decided here, if no other instance did first."""
        decided = replace(outcome, taken_by=self.me, decided_at=self._clock(), detail=why)
        try:
            if not await self.store.change(booking, decided):
                return
        except BookingsUnavailable as exc:
            log.warning("booked_run_not_taken", booking=booking.id, reason=str(exc), hint="tried again shortly")
            return
        self._announce(EventKind.BOOKED_RUN_REFUSED, decided, decided.state, why)

    async def _settle(self, taken: Booking, outcome: Booking, why: str) -> None:
        ended = replace(outcome, decided_at=self._clock(), detail=why)
        await self._save(taken, ended)
        kind = EventKind.BOOKED_RUN_STARTED if ended.state is BookingState.STARTED else EventKind.BOOKED_RUN_REFUSED
        self._announce(kind, ended, ended.state, why)

    async def _save(self, ours: Booking, new: Booking) -> None:
        """Store the outcome of a booking this instance holds (kept and tried again while the store is down)."""
        try:
            await self.store.change(ours, new)
            self._unsaved.pop(new.id, None)
        except BookingsUnavailable as exc:
            self._unsaved[new.id] = (ours, new)
            log.warning("booking_outcome_not_stored", booking=new.id, state=new.state, reason=str(exc))

    def _announce(self, kind: EventKind, booking: Booking, state: BookingState, why: str) -> None:
        reason = f"booking {booking.id} ({booking.kind} of {booking.target} booked by {booking.by}): {why}"
        self._journal(kind, replace(booking, state=state), reason)

    def _journal(self, kind: EventKind, booking: Booking, reason: str) -> None:
        """Journaled, published and logged (one line named by the kind, with the booking, its state and reason)."""
        data = events.BookedRun(booking.id, booking.kind.value, booking.at, booking.by, booking.state.value,
                                booking.plan, booking.run_id, booking.plan_run)
        self._emit(Event(kind, self._clock(), booking.service, None, reason, data), booking=booking.id,
                   state=booking.state.value, due=iso(booking.at), target=booking.target, reason=reason)


def _booking_of(intent: Transfer | RunPlan, at: float, now: float) -> Booking:
    if isinstance(intent, RunPlan):
        return Booking(new_id(), BookingKind.PLAN, at, intent.by, intent.reason, now, plan=intent.plan,
                       force=intent.force)
    return Booking(new_id(), BookingKind(intent.kind.value), at, intent.by, intent.reason, now,
                   service=intent.service, to=intent.to, force=intent.force)


def _intent_of(booking: Booking) -> Transfer | RunPlan:
    """What the booking asks, now, on behalf of who booked it (authorised when it was booked)."""
    reason = f"booking {booking.id}: {booking.reason}"
    if booking.kind is BookingKind.PLAN:
        assert booking.plan is not None
        return RunPlan(booking.plan, booking.by, reason, booking.force)
    assert booking.service is not None
    return Transfer(booking.service, RunKind(booking.kind.value), booking.by, reason, booking.to, booking.force)


def make(journal: Journal, operations: Operations, estate: EstateView, emit: Emit,  # noqa: PLR0917
         cluster: ClusterLink | None, metrics: Metrics) -> BookedRuns:
    """The store of bookings (the journal's, or etcd's in a cluster), the maintenance calendar on it and the
    booked runs, acting through `operations` (made without them: with the plans, for a booked plan run), their
    figures registered. Run it as one part (`BookedRuns.run`)."""
    store: BookingStore = LocalBookings(journal) if cluster is None else ClusterBookings(cluster.coordinator)
    me = estate.config.instance if cluster is None else cluster.vantage
    runs = BookedRuns(operations, estate, emit, store, me=me, executor=cluster is None or cluster.executor)
    runs.calendar = MaintenanceCalendar(operations, estate, emit, store)
    metrics.register(BookingCollector(store.all, me))
    return runs
