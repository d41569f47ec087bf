"""The engine's group commit, and what happens when the journal cannot be written.

The engine stages what one event-loop iteration changed (site rows, service rows, events); `flush()` commits
it in one transaction (within FLUSH_DELAY, without waiting for the disk), then logs one line per event (its
`timestamp` the event's own time, `logged_at` the commit's) and publishes it on the bus (metrics, MQTT,
alerts, SSE). The log line and the publication never depend on the
commit: an event that could not be journaled goes out at once with `id: null` (and `journaled=false` in its
log line).

When a commit fails (disk full, I/O error, read-only file) what it held stays queued, in order, and the
writer retries on the event loop with backoff (RETRY_FIRST doubling to RETRY_MAX); meanwhile new batches
join the queue behind it. Site and service rows are keyed, so the queue holds at most one of each (the
latest). Events are bounded by MAX_QUEUED_EVENTS: beyond it the *newest* are dropped and counted — what is
kept is the unbroken history from the moment the journal failed (the start of an incident, which a
post-mortem needs, rather than the tail of a flapping target), and the current state is never lost (it is in
the keyed rows). Run records that could not be written (a step's or run's end) are kept too, never dropped,
and go first. When a retry succeeds, everything is written in order, a `journal_gap` event records what was
dropped, and one log line `journal_recovered` says how many entries were written and dropped. Queued events
get their ids then; they are not published again.

While the journal cannot be written `refusal()` says why and since when: /readyz is 503 with it, operator
actions are refused (HTTP 503) and no run starts (see Engine, Runner).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

from bcd.bus import Bus
from bcd.events import Event, EventKind, JournalGap
from bcd.journal import Journal, SavedService, SavedSite
from bcd.journal.ledger import SEAL_EVERY, Write

log = structlog.get_logger("bcd.journal")

FLUSH_DELAY = 0.05  # group commit: a burst of transitions (e.g. at start) costs one commit per 50 ms
MAX_QUEUED_EVENTS = 10_000
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
PRUNE_EVERY = 3600.0  # retention (journal.keep) runs at the first commit and then at most this often


def iso8601(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Timer(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Timer]


def _loop_call_later(delay: float, callback: Callable[[], None]) -> Timer | None:
    try:
        return asyncio.get_running_loop().call_later(delay, callback)
    except RuntimeError:  # no event loop (a synchronous caller): the caller acts at once instead
        return None


@dataclass(slots=True)
class JournalStats:
    """The writer's figures for /metrics, kept up to date as it works."""

    write_errors: int = 0  # writes that failed, each retry counted
    queued: int = 0  # entries (events, state rows, run records) waiting to be written
    dropped: int = 0  # events never journaled: the queue was full
    writable: bool = True


class JournalWriter:
    """Stages, commits, logs and publishes the engine's changes; keeps what cannot be written yet.
    `call_later` schedules the flush and the retries (default: the running event loop; a test passes a fake)."""

    def __init__(self, journal: Journal, bus: Bus, clock: Callable[[], float] = time.time,
                 call_later: CallLater | None = None, max_events: int = MAX_QUEUED_EVENTS) -> None:
        self.journal = journal
        self.bus = bus
        self.clock = clock
        self._call_later = call_later
        self.sites: dict[tuple[str, str], SavedSite] = {}  # staged by the engine for the next flush
        self.services: dict[str, SavedService] = {}
        self._staged: list[tuple[Event, dict[str, object]]] = []
        self._flush_timer: Timer | None = None
        self._queue = _Queue(max_events)
        self.failing_since: float | None = None
        self.error = ""
        self.stats = JournalStats()
        self._retry: Timer | None = None
        self._seal_timer: Timer | None = None
        self._delay = RETRY_FIRST
        self._closed = False
        self.recovered: Callable[[], None] = lambda: None  # told once a retry has written what was kept
        self.retention: float | None = None  # journal.keep: entries older than this are pruned
        self._pruned_at: float | None = None

    # -- what the engine calls -----------------------------------------------------------------------
    def emit(self, event: Event, **log_fields: object) -> None:
        """Journal (the next group commit, within FLUSH_DELAY), then log and publish; the log line carries the
        event's reason unless `log_fields` say it otherwise, at warning level if they say `warn=True`."""
        self._staged.append((event, {"service": event.service, "site": event.site, "reason": event.reason,
                                     **log_fields}))
        if self._flush_timer is None:
            self._flush_timer = self._schedule(FLUSH_DELAY, self.flush)
            if self._flush_timer is None:
                self.flush()

    def flush(self) -> None:
        """Commit what was staged (behind anything queued) in one transaction, then log and publish it."""
        self._flush_timer = None
        if self._closed or not (self.sites or self.services or self._staged):
            return
        staged = self._staged
        accepted = self._queue.add(self.sites, self.services, [event for event, _ in staged])
        self.sites, self.services, self._staged = {}, {}, []
        self._counted()
        written: list[Event] = []
        if self._retry is None:  # while a retry is due, new entries wait behind the queue for it
            written = self._write() or []
        published = written[len(written) - accepted:] if written else []
        for index, (staged_event, fields) in enumerate(staged):
            event = published[index] if index < len(published) else staged_event
            extra = {} if event.id is not None else {"journaled": False}
            level = log.warning if fields.pop("warn", False) else log.info
            # stamped with the event's own time (`at`), not this commit's: see bcd.logging
            level(event.kind.value, at=event.at, **{k: v for k, v in fields.items() if v is not None}, **extra)
            self.bus.publish(event)

    def close(self) -> None:
        """Write what is staged or queued; afterwards nothing is written (the journal is about to close)."""
        self.flush()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
            self._write()
        self._closed = True
        for timer in (self._retry, self._seal_timer):
            if timer is not None:
                timer.cancel()
        if self._queue.size:
            log.error("journal_entries_lost", entries=self._queue.size, error=self.error,
                      hint="the journal could not be written before the daemon stopped")

    def refusal(self) -> str | None:
        """Why nothing that needs the journal may happen now; None while it can be written."""
        if self.failing_since is None:
            return None
        return f"journal cannot be written: {self.error} since {iso8601(self.failing_since)}"

    def _counted(self) -> None:
        """Bring `stats` up to date with the queue (after every change to it)."""
        stats, queue = self.stats, self._queue
        stats.queued, stats.dropped, stats.writable = queue.size, queue.dropped_total, self.failing_since is None

    # -- WriteFailures (the run journal) ----------------------------------------------------------------
    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def report(self, exc: sqlite3.Error) -> None:
        """A write failed elsewhere (the run journal): failing until a retry succeeds."""
        self._failed(exc)

    def keep(self, write: Write) -> None:
        """A run record to write as soon as the journal can be written, before the queued events."""
        self._queue.statements.append(write)
        self._counted()
        if self._retry is None:
            self._retry = self._schedule(self._delay, self._retry_now)

    # -- writing and retrying --------------------------------------------------------------------------
    def _write(self) -> list[Event] | None:
        """Write the whole queue in one transaction: the events as journaled, or None (still queued)."""
        queue, now = self._queue, self.clock()
        gap = queue.gap(now)
        try:
            with self.journal.transaction(sync=bool(queue.statements)):
                for write in queue.statements:
                    self.journal.apply(write, now)
                for site in queue.sites.values():
                    self.journal.save_site(site)
                for service in queue.services.values():
                    self.journal.save_service(service)
                written = self.journal.append_events(queue.events)
                gap = self.journal.append(gap) if gap is not None else None
                if not queue.size and self.failing_since is not None:
                    self.journal.probe_write(now)  # nothing else to write: is it writable again?
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        entries, dropped = queue.size, queue.dropped
        self._queue = _Queue(queue.limit, queue.dropped_total)
        if self.failing_since is not None:
            log.info("journal_recovered", written=entries, dropped=dropped, write_errors=self.stats.write_errors,
                     failed_for=round(now - self.failing_since, 3))
            self.failing_since, self.error, self._delay = None, "", RETRY_FIRST
            self.recovered()
        self._counted()
        if gap is not None:
            self.bus.publish(gap)
        self._prune(now)
        self._seal_later()
        return written

    def _seal_later(self) -> None:
        """Events entries wait for their hashes (ledger.py): a commit seals them once they are SEAL_EVERY old, and
        this timer does it when no commit comes (a quiet estate)."""
        if self._seal_timer is None and (ledger := self.journal.ledger) is not None and ledger.unsealed:
            self._seal_timer = self._schedule(SEAL_EVERY, self._seal_now)

    def _seal_now(self) -> None:
        self._seal_timer = None
        ledger = self.journal.ledger
        if self._closed or self.failing_since is not None or ledger is None:  # a retry's commit seals them
            return
        if (left := SEAL_EVERY - ledger.waited()) > 0:  # a commit sealed the older ones: the newer are not due yet
            if ledger.unsealed:
                self._seal_timer = self._schedule(left, self._seal_now)
            return
        try:
            self.journal.seal()
        except sqlite3.Error as exc:
            self._failed(exc)

    def _prune(self, now: float) -> None:
        """Retention, after a successful commit; a failure is logged and tried again PRUNE_EVERY later."""
        if self.retention is None or (self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY):
            return
        self._pruned_at = now
        try:
            checkpoint = self.journal.prune(now - self.retention, now)
        except sqlite3.Error as exc:
            log.warning("journal_prune_failed", error=str(exc), hint=f"tried again in {PRUNE_EVERY:.0f} s")
            return
        if checkpoint is not None:
            log.info("journal_pruned", before=iso8601(checkpoint["before"]), through=checkpoint["through"],
                     deleted=checkpoint["deleted"], carried=checkpoint["carried"])

    def _failed(self, exc: sqlite3.Error) -> None:
        self.stats.write_errors += 1
        first = self.failing_since is None
        self.error = str(exc)
        if first:
            self.failing_since = self.clock()
            log.error("journal_write_failed", error=self.error, queued=self._queue.size, path=str(self.journal.path),
                      hint="free space in state_dir (or fix the file); entries stay queued and are written when "
                           f"it can (events: the first {self._queue.limit}); operator actions and runs are refused")
        if self._retry is None:
            self._retry = self._schedule(self._delay, self._retry_now)
            self._delay = min(self._delay * 2, RETRY_MAX)
        self._counted()

    def _retry_now(self) -> None:
        self._retry = None
        if not self._closed:
            self._write()

    def _schedule(self, delay: float, callback: Callable[[], None]) -> Timer | None:
        if self._call_later is not None:
            return self._call_later(delay, callback)
        return _loop_call_later(delay, callback)


class _Queue:
    """What has not been written yet: run records, the latest site and service rows, events in order."""

    def __init__(self, limit: int, dropped_total: int = 0) -> None:
        self.limit = limit
        self.statements: list[Write] = []
        self.sites: dict[tuple[str, str], SavedSite] = {}
        self.services: dict[str, SavedService] = {}
        self.events: list[Event] = []
        self.dropped = 0  # since the last successful write
        self.dropped_total = dropped_total
        self._dropped_span: tuple[float, float] | None = None

    @property
    def size(self) -> int:
        return len(self.statements) + len(self.sites) + len(self.services) + len(self.events)

    def add(self, sites: dict[tuple[str, str], SavedSite], services: dict[str, SavedService],
            events: list[Event]) -> int:
        """Queue a batch; returns how many of its events were kept (a prefix: the newest are dropped)."""
        self.sites.update(sites)
        self.services.update(services)
        room = max(0, self.limit - len(self.events))
        kept, lost = events[:room], events[room:]
        self.events.extend(kept)
        if lost:
            self.dropped += len(lost)
            self.dropped_total += len(lost)
            first = self._dropped_span[0] if self._dropped_span is not None else lost[0].at
            self._dropped_span = (first, lost[-1].at)
        return len(kept)

    def gap(self, now: float) -> Event | None:
        """The event that records the dropped events in the journal, in their place (after the kept ones)."""
        if not self.dropped or self._dropped_span is None:
            return None
        first, last = self._dropped_span
        return Event(EventKind.JOURNAL_GAP, now, None, None,
                     f"{self.dropped} events from {iso8601(first)} to {iso8601(last)} were not journaled: "
                     f"the journal could not be written and {self.limit} events were queued already",
                     JournalGap(self.dropped, first, last))
