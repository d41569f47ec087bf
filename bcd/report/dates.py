"""A report's period from the words a person gives: `--from 2026-07-01 --to 2026-09-30` is the whole quarter."""

from __future__ import annotations

import datetime as dt

from bcd.report import ReportError

DAY = 86400.0


def moment(text: str, *, end: bool) -> float:
    """A date or an ISO time, UTC unless it says otherwise. A date alone as an end means the end of that day
    (the period includes it); as a start, its beginning. ReportError when `text` is neither."""
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"expected a date such as 2026-07-01 or a time such as 2026-07-01T12:00:00Z; "
                          f"got {text!r}") from None
    at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()
    date_only = len(text.strip()) == len("2026-07-01")
    return at + DAY if end and date_only else at


def period(start_text: str, end_text: str) -> tuple[float, float]:
    """[start, end) from the two texts; ReportError when either is not a date, or the end is not after the start."""
    start, end = moment(start_text, end=False), moment(end_text, end=True)
    if end <= start:
        raise ReportError(f"the period must end after it starts: from {start_text} to {end_text}")
    return start, end
