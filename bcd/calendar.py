"""A small calendar syntax for repeating events (maintenance windows, drills), and its next occurrences.

    EXPRESSION := [every | each] DAYS [of MONTHS] HH:MM
    DAYS       := day                      every day
                | WEEKDAY[,WEEKDAY...]     e.g. Monday, or Mon,Thu
                | ORDINAL WEEKDAY          first .. fifth, or last: "second Wednesday"
    MONTHS     := [each | every] month | MONTH[,MONTH...]   e.g. Jan,Apr,Jul,Oct (default: every month)

Examples: "second Wednesday of each month 22:00", "every day 02:00", "first Tuesday of Jan,Apr,Jul,Oct 02:00",
"every Sat,Sun 06:30", "last Friday of Dec 18:00". Case does not matter; names may be full or three letters.

Times are wall-clock times in the event's time zone (zoneinfo), so a 22:00 event stays at 22:00 local time
across daylight-saving changes. A time the clock skips (01:30 on the spring-forward day in Europe/London)
happens as far after the jump as it was after the gap's start (at 02:30 BST: PEP 495's fold=0); a time the
clock shows twice (01:30 on the fall-back day) happens the first time (BST). Durations are elapsed time.
"""

from __future__ import annotations

import calendar as _stdlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

HORIZON_YEARS = 8  # an expression with no occurrence this far ahead "never fires" (fifth Monday of Feb does)
_WEEKDAYS = {name.lower(): index for index, name in enumerate(_stdlib.day_name)}
_WEEKDAYS.update({name[:3]: index for name, index in list(_WEEKDAYS.items())})
_MONTHS = {name.lower(): index for index, name in enumerate(_stdlib.month_name) if name}
_MONTHS.update({name[:3]: index for name, index in list(_MONTHS.items())})
_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
ALL_MONTHS = frozenset(range(1, 13))


@dataclass(frozen=True, slots=True)
class Recurrence:
    """A parsed expression: on which days of which months, at what local time."""

    text: str
    weekdays: frozenset[int] | None  # None: every day
    ordinal: int | None  # with one weekday: the nth (1..5) or last (-1) of the month
    months: frozenset[int]
    hour: int
    minute: int

    def matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        if self.weekdays is None:
            return True
        if day.weekday() not in self.weekdays:
            return False
        if self.ordinal is None:
            return True
        if self.ordinal == -1:
            return day.month != (day + timedelta(days=7)).month
        return (day.day - 1) // 7 + 1 == self.ordinal

    def occurrences(self, after: datetime, zone: ZoneInfo) -> Iterator[datetime]:
        """Starts (aware, in `zone`) strictly after `after`, in order, up to HORIZON_YEARS ahead."""
        local = after.astimezone(zone)
        day = local.date()
        for _ in range(366 * HORIZON_YEARS):
            if self.matches(day):
                start = wall_time(day, self.hour, self.minute, zone)
                if start > after:
                    yield start
            day += timedelta(days=1)

    def next_after(self, after: datetime, zone: ZoneInfo) -> datetime | None:
        return next(self.occurrences(after, zone), None)

    def first_after(self, after: datetime, zone: ZoneInfo) -> datetime:
        """`next_after`, or ValueError: an expression that never fires (within HORIZON_YEARS) is a mistake."""
        start = self.next_after(after, zone)
        if start is None:
            raise ValueError(f"{self.text!r} never fires in the next {HORIZON_YEARS} years")
        return start


def wall_time(day: date, hour: int, minute: int, zone: ZoneInfo) -> datetime:
    """The instant the clock in `zone` shows `hour:minute` on `day` (see the module's rule for DST gaps)."""
    naive = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)  # fold=0
    # normalise through UTC: a time in the gap becomes the real wall time after the jump
    return naive.astimezone(ZoneInfo("UTC")).astimezone(zone)


def parse(text: str) -> Recurrence:
    """Parse an expression; ValueError with a plain message (naming the word at fault) otherwise."""
    words = re.sub(r"\s*,\s*", ",", text.strip().lower()).split()
    if not words:
        raise ValueError("empty calendar expression")
    clock = _TIME.match(words[-1])
    if clock is None:
        raise ValueError(f"expected a time HH:MM at the end of {text!r}")
    hour, minute = int(clock.group(1)), int(clock.group(2))
    words = words[:-1]
    if words and words[0] in ("every", "each"):
        words = words[1:]
    months: frozenset[int] = ALL_MONTHS
    if "of" in words:
        at = words.index("of")
        months, words = _months(words[at + 1:], text), words[:at]
    weekdays, ordinal = _days(words, text)
    return Recurrence(text, weekdays, ordinal, months, hour, minute)


def _days(words: list[str], text: str) -> tuple[frozenset[int] | None, int | None]:
    if words == ["day"]:
        return None, None
    if len(words) == 2 and words[0] in _ORDINALS:
        return frozenset({_weekday(words[1], text)}), _ORDINALS[words[0]]
    if len(words) == 1:
        return frozenset(_weekday(name, text) for name in words[0].split(",") if name), None
    raise ValueError(f"expected 'day', a weekday list or 'second Wednesday' before the time in {text!r}")


def _weekday(name: str, text: str) -> int:
    if name not in _WEEKDAYS:
        raise ValueError(f"unknown weekday {name!r} in {text!r}")
    return _WEEKDAYS[name]


def _months(words: list[str], text: str) -> frozenset[int]:
    if words in (["month"], ["each", "month"], ["every", "month"]):
        return ALL_MONTHS
    if len(words) != 1:
        raise ValueError(f"expected 'each month' or months such as Jan,Apr after 'of' in {text!r}")
    names = [name for name in words[0].split(",") if name]
    unknown = [name for name in names if name not in _MONTHS]
    if unknown or not names:
        raise ValueError(f"unknown month {', '.join(map(repr, unknown)) or '(none)'} in {text!r}")
    return frozenset(_MONTHS[name] for name in names)


def when(text: str) -> float:
    """An ISO 8601 time (`2026-12-10T22:00`, `…+00:00`, `…Z`; no offset: UTC) as epoch seconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2026-12-10T22:00:00Z; got {text!r}") from None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()


def zone(name: str) -> ZoneInfo:
    """The time zone `name` (e.g. Europe/London); ValueError if this host's tzdata does not know it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/London)") from None
