"""bcd.booked_runs against a real Engine, Runner and SQLite journal: bad bookings refused with nothing stored, a
booked failover started at its time through the same guards (once), refused with the guard's reason
(journaled, counted), started late within the grace or marked missed beyond it, found interrupted after a stop,
cancelled (by whom the scope allows)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bcd.authority import Actor, Role, Selector
from bcd.booked_runs import BookedRuns
from bcd.bookings import BookingState, LocalBookings
from bcd.bus import Bus
from bcd.config import parse
from bcd.events import Event
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result, RunKind
from bcd.operations import Accepted, CancelBooking, Operations, Refusal, Refused, RunPlan, Transfer
from bcd.outputs.metrics.bookings import BookingCollector
from bcd.view import EngineView
from tests.helpers import estates
from tests.helpers.runner_kit import acting

T = 4_000_000_000.0  # 2096: every booking's time is in the future of the real clock too
PLANS = """
plans:
  evacuate: {from: dorset, to: hampshire}
"""


class Estate:
    def __init__(self, tmp_path: Path) -> None:
        self.now = T
        config = parse(estates.payroll(tmp_path, step="{name: pause, sleep: {duration: 1ms}}", mode="manual",
                                       extra=PLANS))
        self.engine, self.runner = acting(config, Journal(tmp_path / "bcd.sqlite"), Bus())
        self.base = Operations(self.engine)  # what the booked runs act through
        self.emitted: list[Event] = []
        self.store = LocalBookings(self.engine.journal)
        self.booked = self.made(self.store)
        self.operations = self.base.joined(bookings=self.booked)  # the daemon's: bookings made through them

    def made(self, store: LocalBookings, operations: Operations | None = None) -> BookedRuns:
        return BookedRuns(operations or self.base, EngineView(self.engine), self.emit, store, me="unit",
                          clock=lambda: self.now)

    def emit(self, event: Event, **fields: object) -> None:
        self.emitted.append(event)
        self.engine.emit(event, **fields)

    def sites(self, dorset: Result, hampshire: Result) -> None:
        for site, result in (("dorset", dorset), ("hampshire", hampshire)):
            self.engine.observe(Observation(ProbeKey("payroll", site, "health"), result, 0.01, str(result), 100.0))

    async def book(self, at: float, **fields: object) -> Accepted | Refused:
        intent = Transfer("payroll", RunKind.FAILOVER, "olive", "planned move", at=at, **fields)  # type: ignore[arg-type]
        return await self.operations.perform(intent)

    def kinds(self) -> list[str]:
        return [str(event.kind) for event in self.emitted]


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    made = Estate(tmp_path)
    made.sites(Result.OK, Result.OK)
    yield made
    await made.runner.stop()
    made.engine.close()
    made.engine.journal.close()


@pytest.mark.parametrize(("intent", "kind", "reason"), [
    (Transfer("payroll", RunKind.FAILOVER, "olive", "x", at=T - 1), Refusal.CONFLICT,
     "the time 2096-10-02T07:06:39Z has passed (now 2096-10-02T07:06:40Z): book a time to come"),
    (Transfer("payroll", RunKind.FAILOVER, "olive", "x", at=T + 400 * 86400), Refusal.CONFLICT,
     "2097-11-06T07:06:40Z is more than 366 days ahead"),
    (Transfer("nowhere", RunKind.FAILOVER, "olive", "x", at=T + 60), Refusal.NOT_FOUND, "no service named 'nowhere'"),
    (Transfer("payroll", RunKind.FAILOVER, "olive", "x", to="kent", at=T + 60), Refusal.NOT_FOUND,
     "payroll has no site 'kent'"),
    (Transfer("payroll", RunKind.FAILOVER, "olive", "x", dry_run=True, at=T + 60), Refusal.CONFLICT,
     "a dry run is not booked: run it now (leave out `at`)"),
    (RunPlan("nothing", "olive", "x", at=T + 60), Refusal.NOT_FOUND, "no plan named 'nothing'"),
])
async def test_a_bad_booking_is_refused_and_nothing_is_stored(estate: Estate, intent: Transfer | RunPlan,
                                                              kind: Refusal, reason: str) -> None:
    assert await estate.operations.perform(intent) == Refused(kind, reason)
    assert estate.store.all() == [] and estate.emitted == []


async def test_a_booked_failover_starts_at_its_time_once_through_the_guards(estate: Estate) -> None:
    booked = await estate.book(T + 60)
    assert isinstance(booked, Accepted) and booked.booking is not None, booked
    number = booked.booking["id"]
    assert booked.detail == f"booking {number}: failover of payroll at 2096-10-02T07:07:40Z"
    again = await estate.book(T + 60)
    assert again == Refused(Refusal.CONFLICT, f"failover of payroll at 2096-10-02T07:07:40Z is already booked "
                                              f"({number})")
    assert await estate.booked.start_due(T + 59) == 1.0 and estate.engine.runs.recent("payroll") == []
    estate.now = T + 60
    await estate.booked.start_due(estate.now)
    (run,) = estate.engine.runs.recent("payroll")
    assert (run.kind, run.trigger, run.to_site) == (RunKind.FAILOVER, "olive", "hampshire")
    assert run.reason.startswith(f"olive: booking {number}: planned move")
    started = estate.store.get(number)
    assert started is not None and (started.state, started.run_id, started.taken_by) == (
        BookingState.STARTED, run.id, "unit")
    await estate.booked.start_due(T + 61)  # once
    assert len(estate.engine.runs.recent("payroll")) == 1
    assert estate.kinds() == ["run_booked", "booked_run_started"]
    assert estate.emitted[1].data.run_id == run.id  # type: ignore[union-attr]


async def test_a_booked_run_refused_at_its_time_is_journaled_and_counted(estate: Estate) -> None:
    booked = await estate.book(T + 60)
    assert isinstance(booked, Accepted) and booked.booking is not None
    estate.sites(Result.OK, Result.FAIL)  # the standby is down by then: the policy refuses
    estate.now = T + 60
    await estate.booked.start_due(estate.now)
    refused = estate.store.get(booked.booking["id"])
    assert refused is not None and refused.state is BookingState.REFUSED
    assert refused.detail == "refused: no standby of payroll is up"
    assert estate.engine.runs.recent("payroll") == []
    assert estate.kinds() == ["run_booked", "booked_run_refused"]
    assert estate.emitted[1].reason == f"booking {refused.id} (failover of payroll booked by olive): {refused.detail}"
    samples = {(s.name, tuple(s.labels.values())): s.value for family in BookingCollector(estate.store.all, "unit")
               .collect() for s in family.samples}
    assert samples[("bcd_booked_runs_total", ("failover", "refused"))] == 1
    assert samples[("bcd_booked_runs_total", ("plan", "refused"))] == 0  # declared at 0


async def test_a_time_passed_while_down_runs_within_the_grace_else_is_missed(estate: Estate) -> None:
    late, missed = await estate.book(T + 60), await estate.book(T + 30, to="hampshire")
    assert isinstance(late, Accepted) and isinstance(missed, Accepted)
    assert late.booking is not None and missed.booking is not None
    store = estate.store
    old = store.get(missed.booking["id"])
    assert old is not None
    assert await store.change(old, replace(old, at=T - 400))  # its time passed 400 s before the daemon came back
    estate.now = T + 60 + 100  # the other's, 100 s: within the grace (300 s)
    await estate.booked.start_due(estate.now)
    done, gone = store.get(late.booking["id"]), store.get(missed.booking["id"])
    assert done is not None and done.state is BookingState.STARTED
    assert gone is not None and gone.state is BookingState.MISSED
    assert gone.detail == ("missed: its time 2096-10-02T07:00:00Z passed 560s ago while no bcd ran it (grace 300s)")
    assert len(estate.engine.runs.recent("payroll")) == 1


async def test_a_booking_taken_when_the_daemon_stopped_is_interrupted_never_run(estate: Estate) -> None:
    booked = await estate.book(T + 60)
    assert isinstance(booked, Accepted) and booked.booking is not None
    old = estate.store.get(booked.booking["id"])
    assert old is not None
    assert await estate.store.change(old, replace(old, state=BookingState.STARTING, taken_by="unit"))
    again = estate.made(estate.store)  # the next start of the daemon
    estate.now = T + 61
    await again.start_due(estate.now)
    found = estate.store.get(old.id)
    assert found is not None and found.state is BookingState.INTERRUPTED
    assert found.detail.startswith("interrupted: bcd stopped while starting it")
    assert estate.engine.runs.recent("payroll") == [] and estate.kinds()[-1] == "booked_run_refused"


async def test_a_booking_is_cancelled_before_its_time_by_whom_its_scope_allows(estate: Estate) -> None:
    booked = await estate.book(T + 60)
    assert isinstance(booked, Accepted) and booked.booking is not None
    number = booked.booking["id"]
    dana = Actor("dana", Role.OPERATOR, Selector(labels={"owner": "hampshire-cc"}))
    refused = await estate.operations.perform(CancelBooking(number, "dana"), dana)
    assert isinstance(refused, Refused) and refused.kind is Refusal.FORBIDDEN
    grafana = Actor("grafana", Role.VIEWER)
    assert (await estate.operations.perform(CancelBooking(number, "grafana"), grafana)).kind is Refusal.FORBIDDEN  # type: ignore[union-attr]
    done = await estate.operations.perform(CancelBooking(number, "olive", "not tonight"))
    assert isinstance(done, Accepted) and done.booking is not None and done.booking["state"] == "cancelled"
    assert done.booking["detail"] == "cancelled by olive: not tonight"
    assert await estate.operations.perform(CancelBooking(number, "olive")) == Refused(
        Refusal.CONFLICT, f"booking {number} is cancelled: only a booking to come, or a "
        "maintenance window in progress, can be cancelled")
    assert await estate.operations.perform(CancelBooking("nope", "olive")) == Refused(
        Refusal.NOT_FOUND, "no booking 'nope'")
    estate.now = T + 60
    await estate.booked.start_due(estate.now)
    assert estate.engine.runs.recent("payroll") == []
    assert estate.kinds() == ["run_booked", "booking_cancelled"]


async def test_a_booked_plan_starts_a_plan_run_at_its_time(estate: Estate) -> None:
    from bcd.plans.runner import PlanRunner

    plans = PlanRunner(estate.engine.journal, estate.base, EngineView(estate.engine), estate.emit)
    estate.booked = estate.made(estate.store, estate.base.joined(plans=plans))  # a booked plan starts through them
    estate.operations = estate.base.joined(plans=plans, bookings=estate.booked)
    plans.start()
    try:
        booked = await estate.operations.perform(RunPlan("evacuate", "olive", "patch night", at=T + 60))
        assert isinstance(booked, Accepted) and booked.booking is not None, booked
        estate.now = T + 60
        await estate.booked.start_due(estate.now)
        found = estate.store.get(booked.booking["id"])
        assert found is not None and found.state is BookingState.STARTED and found.plan_run is not None, found
    finally:
        await plans.stop()


async def test_a_booked_maintenance_window_is_listed_and_cancelled_with_the_runs(estate: Estate) -> None:
    from bcd.maintenance_calendar import MaintenanceCalendar
    from bcd.operations import BookMaintenance

    calendar = MaintenanceCalendar(estate.base, EngineView(estate.engine), estate.emit, estate.store,
                                   clock=lambda: estate.now)
    estate.operations = estate.operations.joined(calendar=calendar)
    booked = await estate.operations.perform(BookMaintenance("payroll", "dorset", T + 600, 3600, "olive", "patch"))
    assert isinstance(booked, Accepted)
    (window,) = estate.booked.listing()
    assert (window["kind"], window["service"], window["sites"], window["state"]) == (
        "maintenance", "payroll", ["dorset"], "booked")
    assert [w.booking for w in calendar.windows(T)] == [window["id"]]
    done = await estate.operations.perform(CancelBooking(window["id"], "olive"))
    assert isinstance(done, Accepted), done
    assert calendar.windows(T) == []
    await calendar.apply_due(T + 600)
    assert estate.engine.sites[("payroll", "dorset")].maintenance_until is None


async def test_a_maintenance_window_that_has_ended_is_listed_after_those_to_come(estate: Estate) -> None:
    from bcd.maintenance_calendar import MaintenanceCalendar
    from bcd.operations import BookMaintenance

    calendar = MaintenanceCalendar(estate.base, EngineView(estate.engine), estate.emit, estate.store,
                                   clock=lambda: estate.now)
    estate.operations = estate.operations.joined(calendar=calendar)
    window = await estate.operations.perform(BookMaintenance("payroll", "dorset", T + 60, 600, "olive", "patch"))
    run = await estate.book(T + 7200)
    assert isinstance(window, Accepted) and isinstance(run, Accepted) and run.booking is not None
    assert [b["kind"] for b in estate.booked.listing()] == ["maintenance", "failover"]  # both to come, by time
    estate.now = T + 1800  # the window has ended (still `booked`: a window's booking stays so)
    listed = estate.booked.listing()
    assert [(b["kind"], b["state"]) for b in listed] == [("failover", "booked"), ("maintenance", "booked")]
