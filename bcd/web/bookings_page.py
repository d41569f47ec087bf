"""The status page's booked runs: the failovers, failbacks and recovery plans booked for a set time that have not
started yet, with their time, who booked them and why (maintenance windows have their own section). Server-rendered
(the page reloads it; every value escaped)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape as _e  # quotes too: every value goes into text or an attribute
from typing import Any

from bcd.bookings import RUN_KINDS, BookingState
from bcd.web.sections import table_section

SHOWN = 20  # bookings listed; the rest are behind `bcd bookings`
COMING = (BookingState.BOOKED, BookingState.STARTING)


def coming(bookings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The booked runs to come, by time, from `Operations.bookings()`."""
    return [booking for booking in bookings if booking["kind"] in RUN_KINDS and booking["state"] in COMING]


def section(bookings: list[dict[str, Any]], readable: bool) -> str:
    return table_section("bookings", "Booked runs", ("Booking", "Run", "When", "Booked by", "Reason"),
                         "".join(_row(booking) for booking in bookings[:SHOWN]), table="booked-runs",
                         caption="Booked runs, by time", empty="No run is booked.", readable=readable)


def _row(booking: dict[str, Any]) -> str:
    if booking["kind"] == "plan":
        run = f'plan {_e(booking["plan"])}'
    else:
        to = f' to {_e(booking["to"])}' if booking.get("to") else ""
        run = f'{_e(booking["kind"])} of {_e(booking["service"])}{to}'
    starting = " <strong>starting</strong>" if booking["state"] == "starting" else ""
    moment = datetime.fromtimestamp(booking["at"], UTC)
    return (f'<tr data-booking="{_e(booking["id"])}"><td>{_e(booking["id"])}</td><td>{run}{starting}</td>'
            f'<td><time datetime="{moment.isoformat()}">{moment:%Y-%m-%d %H:%M} UTC</time></td>'
            f'<td>{_e(booking["by"])}</td><td>{_e(booking["reason"])}</td></tr>')
