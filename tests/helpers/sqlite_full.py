"""A real SQLite journal made full with its own `PRAGMA max_page_count`: a write that needs a new page fails
with SQLITE_FULL ("database or disk is full"), as on a full disk, without filling one."""

from __future__ import annotations

from bcd.journal import Journal

BIG = "x" * 8000
"""A value that needs new pages: refused at once by a journal held at its size."""


class FullJournal:
    """Holds a journal at its current size (`fill`) and gives the room back (`free`)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def fill(self) -> None:
        pages = self.journal.execute("PRAGMA page_count").fetchone()[0]
        self.journal.execute(f"PRAGMA max_page_count={pages}")

    def free(self) -> None:
        self.journal.execute("PRAGMA max_page_count=1073741823")
