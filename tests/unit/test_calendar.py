"""bcd.calendar: the expression syntax, next occurrences, and local times across daylight-saving changes."""

from __future__ import annotations

import itertools
from datetime import datetime

import pytest

from bcd import calendar

LONDON = calendar.zone("Europe/London")


def starts(expression: str, after: str, count: int = 3) -> list[str]:
    recurrence = calendar.parse(expression)
    begin = datetime.fromisoformat(after).replace(tzinfo=LONDON)
    return [when.isoformat() for when in itertools.islice(recurrence.occurrences(begin, LONDON), count)]


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("second Wednesday of each month 22:00", "2026-12-01T00:00",
     ["2026-12-09T22:00:00+00:00", "2027-01-13T22:00:00+00:00", "2027-02-10T22:00:00+00:00"]),
    ("every day 02:00", "2026-12-07T02:00",  # strictly after: today's 02:00 is not next
     ["2026-12-08T02:00:00+00:00", "2026-12-09T02:00:00+00:00", "2026-12-10T02:00:00+00:00"]),
    ("first Tuesday of Jan, Apr,Jul,Oct 02:00", "2026-12-07T00:00",
     ["2027-01-05T02:00:00+00:00", "2027-04-06T02:00:00+01:00", "2027-07-06T02:00:00+01:00"]),
    ("last Friday of Dec 18:00", "2026-01-01T00:00",
     ["2026-12-25T18:00:00+00:00", "2027-12-31T18:00:00+00:00", "2028-12-29T18:00:00+00:00"]),
    ("EVERY Sat,Sun 6:30", "2026-12-07T00:00",
     ["2026-12-12T06:30:00+00:00", "2026-12-13T06:30:00+00:00", "2026-12-19T06:30:00+00:00"]),
    ("fifth Thursday of each month 09:15", "2026-12-01T00:00",
     ["2026-12-31T09:15:00+00:00", "2027-04-29T09:15:00+01:00", "2027-07-29T09:15:00+01:00"]),
])
def test_next_occurrences(expression: str, after: str, expected: list[str]) -> None:
    assert starts(expression, after) == expected


def test_a_22_00_window_stays_at_22_00_local_across_both_changes_of_the_year() -> None:
    # spring forward on Sunday 28 March 2027, fall back on Sunday 31 October 2027
    assert starts("every Sat,Sun,Mon 22:00", "2027-03-27T00:00") == [
        "2027-03-27T22:00:00+00:00", "2027-03-28T22:00:00+01:00", "2027-03-29T22:00:00+01:00"]
    assert starts("every Sat,Sun,Mon 22:00", "2027-10-30T00:00") == [
        "2027-10-30T22:00:00+01:00", "2027-10-31T22:00:00+00:00", "2027-11-01T22:00:00+00:00"]


def test_a_start_in_the_skipped_hour_happens_as_far_after_the_jump() -> None:
    # 01:30 does not exist on 28 March 2027: the clock goes from 01:00 GMT to 02:00 BST; the start is 02:30 BST,
    # an hour after the day before's in elapsed time as on every other day
    assert starts("every day 01:30", "2027-03-27T00:00") == [
        "2027-03-27T01:30:00+00:00", "2027-03-28T02:30:00+01:00", "2027-03-29T01:30:00+01:00"]


def test_a_start_in_the_repeated_hour_happens_the_first_time() -> None:
    # 01:30 happens twice on 31 October 2027 (BST, then GMT): the window starts at the first, once
    got = starts("every day 01:30", "2027-10-30T00:00")
    assert got == ["2027-10-30T01:30:00+01:00", "2027-10-31T01:30:00+01:00", "2027-11-01T01:30:00+00:00"]


def test_an_expression_that_never_fires_is_refused() -> None:
    recurrence = calendar.parse("fifth Monday of Feb 10:00")  # next in February 2044
    with pytest.raises(ValueError, match="never fires in the next 8 years"):
        recurrence.first_after(datetime(2026, 12, 7, tzinfo=LONDON), LONDON)


@pytest.mark.parametrize(("expression", "message"), [
    ("", "empty calendar expression"),
    ("every day", "expected a time HH:MM at the end"),
    ("every day 24:00", "expected a time HH:MM at the end"),
    ("thirdd Monday 10:00", "expected 'day', a weekday list or 'second Wednesday'"),
    ("Mon,Funday 10:00", "unknown weekday 'funday'"),
    ("second Monday of Jan,Smarch 10:00", "unknown month 'smarch'"),
    ("second Monday of the year 10:00", "expected 'each month' or months such as Jan,Apr after 'of'"),
])
def test_bad_expressions_say_what_is_wrong(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calendar.parse(expression)


def test_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        calendar.zone("Mars/Olympus")
