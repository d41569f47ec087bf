"""bcd.maintenance_calendar against a real engine and journal: occurrences of repeating windows, overlapping
windows (listed, applied, and one that would leave no site skipped), each start applied once; maintenance from now
as a window, and windows cut short (here or elsewhere) ended for good."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from bcd import calendar, events
from bcd.bookings import Booking, BookingState, LocalBookings
from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.events import Event
from bcd.journal import Journal
from bcd.maintenance_calendar import LOOK_AHEAD, MaintenanceCalendar, occurrence
from bcd.operations import Accepted, BookMaintenance, EndMaintenance, Operations, Refusal, Refused, StartMaintenance
from bcd.view import EngineView
from tests.helpers import estates

LONDON = calendar.zone("Europe/London")
T = datetime(2099, 3, 10, 22, 0, tzinfo=LONDON).timestamp()  # a Tuesday (GMT)
WINDOWS = """
maintenance:
  dorset-nights: {sites: [dorset], every: "every day 22:00", duration: 4h, timezone: Europe/London,
                  reason: "dorset patching"}
  hampshire-switch: {sites: [hampshire], from: "2099-03-11T01:00", for: 2h, timezone: Europe/London,
                     reason: "new switch"}
  hampshire-later: {sites: [hampshire], from: "2099-03-11T12:00", for: 1h, timezone: Europe/London,
                    reason: "cabling"}
"""


class Estate:
    def __init__(self, tmp_path: Path) -> None:
        self.now = T
        config = parse(estates.payroll(tmp_path, step="{name: pause, sleep: {duration: 1ms}}", mode="manual",
                                       extra=WINDOWS))
        self.engine = Engine(config, Journal(tmp_path / "bcd.sqlite"), Bus(), clock=lambda: self.now)
        self.emitted: list[Event] = []
        self.store = LocalBookings(self.engine.journal)
        self.calendar = MaintenanceCalendar(Operations(self.engine), EngineView(self.engine), self.emit, self.store,
                                            clock=lambda: self.now)

    def emit(self, event: Event) -> None:
        self.emitted.append(event)
        self.engine.emit(event)

    def in_maintenance(self) -> dict[str, float | None]:
        return {site: self.engine.sites[("payroll", site)].maintenance_until for site in ("dorset", "hampshire")}


@pytest.fixture
def estate(tmp_path: Path) -> Iterator[Estate]:
    made = Estate(tmp_path)
    yield made
    made.engine.journal.close()


def test_a_repeating_window_in_progress_is_its_current_occurrence(estate: Estate) -> None:
    spec = estate.engine.config.maintenance["dorset-nights"]
    assert occurrence(spec, T - 1) == (T, T + 4 * 3600)  # next: tonight
    assert occurrence(spec, T + 3600) == (T, T + 4 * 3600)  # in progress: still tonight's
    assert occurrence(spec, T + 4 * 3600) == (T + 86400, T + 86400 + 4 * 3600)  # ended: tomorrow's


def test_overlapping_windows_are_listed_by_start(estate: Estate) -> None:
    windows = estate.calendar.windows(T - 60)
    assert [(w.name, w.start - T, w.end - T, w.source) for w in windows] == [
        ("dorset-nights", 0, 4 * 3600, "config"), ("hampshire-switch", 3 * 3600, 5 * 3600, "config"),
        ("hampshire-later", 14 * 3600, 15 * 3600, "config")]


async def test_each_start_is_applied_once_and_an_overlap_leaving_no_site_is_skipped(estate: Estate) -> None:
    assert await estate.calendar.apply_due(T - 60) == 60  # nothing due; the next start within LOOK_AHEAD
    assert await estate.calendar.apply_due(T - 3600) == LOOK_AHEAD
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}
    estate.now = T
    await estate.calendar.apply_due(T)
    assert estate.in_maintenance() == {"dorset": T + 4 * 3600, "hampshire": None}
    reason = estate.engine.sites[("payroll", "dorset")].maintenance_reason
    assert reason == "calendar: window dorset-nights: dorset patching"
    # hampshire-switch starts while dorset is in maintenance: payroll would have no site outside it
    estate.now = T + 3 * 3600
    await estate.calendar.apply_due(estate.now)
    assert [(event.kind, event.service, event.reason) for event in estate.emitted] == [(
        "maintenance_window_refused", "payroll", "window hampshire-switch: payroll would have no site outside "
        "maintenance: dorset (window dorset-nights), hampshire (window hampshire-switch); force it if that is meant")]
    assert estate.emitted[0].data == events.MaintenanceWindow("hampshire-switch", ("hampshire",), T + 3 * 3600,
                                                              T + 5 * 3600, "config")
    assert estate.in_maintenance() == {"dorset": T + 4 * 3600, "hampshire": None}
    # dorset's maintenance ends by itself at its window's end; a later hampshire window applies
    estate.now = T + 14 * 3600
    estate.engine.tick()
    await estate.calendar.apply_due(estate.now)
    assert estate.in_maintenance() == {"dorset": None, "hampshire": T + 15 * 3600}
    estate.engine.end_maintenance("payroll", "hampshire", "test")
    await estate.calendar.apply_due(estate.now)  # applied once: ending it by hand is not undone
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}


async def test_a_booking_gives_way_to_maintenance_already_set_unless_forced(estate: Estate) -> None:
    estate.now = T + 5 * 3600  # between the config windows
    estate.engine.start_maintenance("payroll", "hampshire", 3600, "cabling", "olive")
    later = estate.now + 600
    refused = await estate.calendar.perform(BookMaintenance("payroll", "dorset", later, 1800, "olive", "patch"))
    assert refused == Refused(Refusal.CONFLICT, "payroll would have no site outside maintenance: dorset (window "
                                                "payroll.dorset@20990311T031000Z), hampshire (maintenance already "
                                                "set); force it if that is meant")
    after = estate.now + 3600  # hampshire's maintenance has ended by then
    booked = await estate.calendar.perform(BookMaintenance("payroll", "dorset", after, 1800, "olive", "patch"))
    assert isinstance(booked, Accepted) and booked.until == after + 1800
    forced = await estate.calendar.perform(BookMaintenance("payroll", "dorset", later, 60, "olive", "x", force=True))
    assert isinstance(forced, Accepted)
    assert [w.name for w in estate.calendar.windows() if w.source == "booked"] == [
        "payroll.dorset@20990311T031000Z", "payroll.dorset@20990311T040000Z"]
    assert [event.kind for event in estate.emitted] == ["maintenance_booked", "maintenance_booked"]


def restarted(estate: Estate) -> MaintenanceCalendar:
    """The calendar of a daemon started again on the same state directory (nothing applied yet)."""
    return MaintenanceCalendar(Operations(estate.engine), EngineView(estate.engine), estate.emit, estate.store,
                               clock=lambda: estate.now)


async def test_maintenance_now_is_a_window_that_replaces_the_one_in_progress_and_ends_for_good(estate: Estate) -> None:
    """A cluster member's maintenance from now (Operations routes it here there): a window booked now, applied at
    once; set again, it cuts short the one before; ended, it is not set again by a restart's calendar."""
    estate.now = T + 5 * 3600  # between the config windows
    first = await estate.calendar.start_now(StartMaintenance("payroll", "dorset", 3600, "olive", "patch"))
    assert isinstance(first, Accepted) and first.sites == ["dorset"] and first.until == estate.now + 3600
    assert first.detail.startswith("maintenance of dorset for 3600s, on every instance (window payroll.dorset@")
    assert estate.in_maintenance() == {"dorset": estate.now + 3600, "hampshire": None}
    name = first.booking["name"] if first.booking else None
    assert estate.engine.sites[("payroll", "dorset")].maintenance_reason == f"olive: window {name}: patch"
    estate.now += 60
    second = await estate.calendar.start_now(StartMaintenance("payroll", "dorset", 600, "olive", "shorter"))
    assert isinstance(second, Accepted) and estate.in_maintenance()["dorset"] == estate.now + 600
    assert first.booking and second.booking
    assert estate.store.get(first.booking["id"]) == replace(
        Booking.from_json(first.booking), state=BookingState.CANCELLED, decided_at=estate.now, detail="ended by olive",
        ended_by="olive")
    await restarted(estate).apply_due(estate.now)  # the live window is set again, the one cut short is not
    assert estate.in_maintenance() == {"dorset": estate.now + 600, "hampshire": None}
    ended = await Operations(estate.engine, calendar=estate.calendar).perform(EndMaintenance("payroll", None, "ivan"))
    assert ended == Accepted("maintenance ended for dorset", sites=["dorset"])
    assert estate.store.get(second.booking["id"]).ended_by == "ivan"  # type: ignore[union-attr]
    await restarted(estate).apply_due(estate.now)
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}


async def test_a_window_cut_short_elsewhere_ends_here_on_the_sites_it_left(estate: Estate) -> None:
    estate.now = T + 5 * 3600
    booked = await estate.calendar.start_now(StartMaintenance("payroll", None, 3600, "olive", "move racks"))
    assert isinstance(booked, Accepted) and booked.booking is not None
    assert estate.in_maintenance() == {"dorset": estate.now + 3600, "hampshire": estate.now + 3600}
    window = Booking.from_json(booked.booking)
    estate.now += 30  # another instance ended hampshire's maintenance: the window covers dorset alone
    assert await estate.store.change(window, replace(window, sites=("dorset",), ended_by="ivan"))
    await estate.calendar.apply_due(estate.now)
    assert estate.in_maintenance() == {"dorset": window.end, "hampshire": None}
    estate.engine.writer.flush()
    ended = [(e.site, e.reason) for e in estate.engine.journal.last_events(50) if e.kind == "maintenance_ended"]
    assert ended == [("hampshire", "ended by ivan")]
    estate.engine.start_maintenance("payroll", "hampshire", 600, "cabling", "olive")  # set by hand since: kept
    await estate.calendar.apply_due(estate.now)
    assert estate.in_maintenance() == {"dorset": window.end, "hampshire": estate.now + 600}


async def test_ending_a_booked_window_by_hand_is_not_undone_by_a_restart(estate: Estate) -> None:
    estate.now = T + 5 * 3600
    start = estate.now + 60
    booked = await estate.calendar.perform(BookMaintenance("payroll", "hampshire", start, 1800, "olive", "patch"))
    assert isinstance(booked, Accepted)
    estate.now = start
    await estate.calendar.apply_due(estate.now)
    assert estate.in_maintenance() == {"dorset": None, "hampshire": start + 1800}
    operations = Operations(estate.engine, calendar=estate.calendar)
    assert await operations.perform(EndMaintenance("payroll", "hampshire", "ivan")) == Accepted(
        "maintenance ended for hampshire", sites=["hampshire"])
    await restarted(estate).apply_due(estate.now + 1)
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}
    assert [w.name for w in estate.calendar.windows() if w.source == "booked"] == []


async def test_a_config_window_ended_by_hand_stays_ended_after_a_restart_until_its_next_occurrence(
        estate: Estate) -> None:
    await estate.calendar.apply_due(T)
    assert estate.in_maintenance() == {"dorset": T + 4 * 3600, "hampshire": None}
    estate.now = T + 600
    operations = Operations(estate.engine, calendar=estate.calendar)
    assert await operations.perform(EndMaintenance("payroll", None, "ivan")) == Accepted(
        "maintenance ended for dorset", sites=["dorset"])
    (ended,) = estate.store.all()  # the record every instance reads (etcd in a cluster)
    assert (ended.name, ended.at, ended.state, ended.sites, ended.ended_by) == (
        "dorset-nights", T, BookingState.CANCELLED, ("dorset",), "ivan")
    await restarted(estate).apply_due(estate.now)  # this occurrence is not applied again there
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}
    estate.now = T + 86400  # the next night's occurrence applies as usual
    await restarted(estate).apply_due(estate.now)
    assert estate.in_maintenance() == {"dorset": T + 86400 + 4 * 3600, "hampshire": None}


async def test_a_config_window_ended_on_another_instance_ends_here(estate: Estate) -> None:
    await estate.calendar.apply_due(T)
    other = restarted(estate)  # another instance's calendar, on the same store of bookings
    assert await other.end_now(EndMaintenance("payroll", "dorset", "ivan")) == Accepted(
        "maintenance ended for dorset", sites=["dorset"])
    estate.engine.start_maintenance("payroll", "dorset", 4 * 3600, "window dorset-nights: dorset patching",
                                    "calendar")  # as this instance's engine still has it (the test has one engine)
    await estate.calendar.apply_due(T + 1)
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}


async def test_maintenance_now_that_cannot_be_set_here_is_booked_nowhere(estate: Estate) -> None:
    """The journal cannot be written (a full disk, reported by a failed write): the window booked for every
    instance is cancelled again and the refusal is the engine's."""
    estate.now = T + 5 * 3600
    estate.engine.writer.report(sqlite3.OperationalError("database or disk is full"))
    refused = await estate.calendar.start_now(StartMaintenance("payroll", "dorset", 600, "olive", "patch"))
    assert isinstance(refused, Refused) and refused.kind is Refusal.UNAVAILABLE, refused
    assert "database or disk is full" in refused.reason
    (booking,) = estate.store.all()
    assert booking.state is BookingState.CANCELLED and booking.detail.startswith("not set on the instance asked: ")
    assert estate.in_maintenance() == {"dorset": None, "hampshire": None}
