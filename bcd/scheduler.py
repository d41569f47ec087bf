"""Periodic probe runs: a heap of due times under one event-loop timer, spread start times, a global cap.

Each probe is due every `interval` seconds on the monotonic clock, at a fixed offset inside the interval
derived from its key (stable across restarts, so a fleet of probes never fires as a herd). Due times wait
in one heap under a single event-loop timer armed for the earliest (a timer per probe costs ~600 bytes each
on uvloop: 12 MB at 20,000 probes). A run that is still in flight when the next one is due is skipped and
counted, never queued twice. Lateness — how long after its due time a run actually started (after waiting
for a concurrency slot) — is measured per run. A run that outlives its probe's own timeout by GRACE is cut
off by a sweep of the runs in flight.

Early runs. The sink says what each result leaves in doubt (`bcd.model`: SETTLED, HURRY, SUSPECT). While a probe
leaves its site in doubt it runs again `fast_interval` after its last start (fast confirmation) instead of at
its next due time; the schedule itself never moves, so once the site is confirmed down or up the probe is back
on its spread offset (a due time at most half a fast_interval after an early run is skipped: that run took
its place). A first failure (SUSPECT) also goes to `Bursts`: first failures of several services at one site
within a short window run every probe of that site at once (`run_now`), at most once per site per gap. Early
runs take concurrency slots like any other, so `max_concurrency` bounds them too, and none is started while the
scheduler is behind (`behind()`): failures then may be bcd's own shortage, and early runs would feed it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import itertools
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from bcd.bursts import Bursts
from bcd.lifetime import hold
from bcd.model import SUSPECT, Observation, ProbeKey, ProbeResult, Result
from bcd.probes.base import Probe, local_shortage
from bcd.stats import Histogram

if TYPE_CHECKING:
    from bcd.config.models import BurstRules, Timing

log = structlog.get_logger("bcd.scheduler")

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GRACE = 0.5  # seconds beyond a probe's own timeout before the scheduler cuts it off
SWEEP = 0.25  # how often runs in flight are checked against that limit (a timer per run costs ~20 µs)
EARLY = 0.001  # a run due this soon is started now (event-loop timers may fire up to a millisecond early)
BEHIND = 1.0  # runs on schedule starting this late mean bcd itself is short of time: no early runs then


@dataclass(frozen=True, slots=True)
class Job:
    """One probe to run periodically; `fingerprint` changes when its config does."""

    key: ProbeKey
    interval: float
    timeout: float
    fingerprint: bytes
    fast_interval: float | None = None  # spacing while the probe leaves its site in doubt (None, or >= interval: off)

    @classmethod
    def of(cls, key: ProbeKey, timing: Timing, spec: str) -> Job:
        """The job of a probe with this timing; its fingerprint is a digest of `spec` (what, if it changes, makes
        a new probe and a new schedule)."""
        fingerprint = hashlib.blake2b(spec.encode(), digest_size=16).digest()  # kept per probe: keep it small
        return cls(key, timing.interval, timing.timeout, fingerprint, timing.fast_interval)


@dataclass(slots=True)
class _Entry:
    job: Job
    probe: Probe
    due: float
    ticket: int = 0  # of its one valid place in the heap; older places are stale and skipped
    running: bool = False
    runs: int = 0
    fast_at: float = math.inf  # when its next early run (fast confirmation) is due, if before `due`


@dataclass(slots=True)
class SchedulerStats:
    """The scheduler's figures, for /metrics and the bench."""

    lateness: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKETS))
    started: int = 0
    skipped: int = 0
    max_lateness: float = 0.0
    in_flight: int = 0
    probes: int = 0  # scheduled
    fast_runs: int = 0  # runs started ahead of their schedule: fast confirmation and site re-probes
    bursts: Counter[str] = field(default_factory=Counter)  # site → times every probe of it was re-run at once


def spread_offset(key: ProbeKey, interval: float) -> float:
    """A stable offset in [0, interval) for this probe."""
    digest = zlib.crc32(f"{key.service}\0{key.site}\0{key.probe}".encode())
    return (digest % 100_000) / 100_000 * interval


class Scheduler:
    """Runs every job on its interval and hands each Observation to `sink`, which says what the result leaves in
    doubt (`bcd.model.SETTLED`, `HURRY`, `HURRY | SUSPECT`; None counts as SETTLED)."""

    def __init__(
        self,
        sink: Callable[[Observation], int | None],
        max_concurrency: int,
        vantage: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._slots = asyncio.Semaphore(max_concurrency)
        self._late = 0.0  # how late the last run on schedule started
        self._vantage = vantage
        self._wall_clock = wall_clock
        self._entries: dict[ProbeKey, _Entry] = {}
        self._heap: list[tuple[float, int, _Entry]] = []
        self._tickets = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._limits: dict[asyncio.Task[None], float] = {}  # runs in flight → when the scheduler cuts them off
        self._cut: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._bursts = Bursts(0, 0.0, 0.0)
        self.stats = SchedulerStats()
        self.progress = 0  # bumps on every finished run: the watchdog's sign of life

    @functools.cached_property
    def _loop(self) -> asyncio.AbstractEventLoop:
        """The loop it runs on, taken at first use: a scheduler can be made before the loop runs."""
        return asyncio.get_running_loop()

    @property
    def keys(self) -> set[ProbeKey]:
        return set(self._entries)

    def all_ran_once(self) -> bool:
        return all(entry.runs > 0 for entry in self._entries.values())

    def sync(self, jobs: Iterable[Job], build: Callable[[Job], Probe], bursts: BurstRules | None = None) -> None:
        """Make the running set equal `jobs`: unchanged ones keep their schedule and probe object,
        new or changed ones get a probe from `build` and a fresh schedule. `bursts` (if given) replaces the
        rules for re-probing a site at once (none by default)."""
        if bursts is not None:
            self._bursts = Bursts(bursts.failures, bursts.window, bursts.gap)
        wanted = {job.key: job for job in jobs}
        for key in list(self._entries):
            if key not in wanted or wanted[key].fingerprint != self._entries[key].job.fingerprint:
                self._remove(key)
            else:
                self._entries[key].job = wanted[key]  # the same probe and schedule, perhaps another fast_interval
        now = self._loop.time()
        for key, job in wanted.items():
            if key not in self._entries:
                entry = _Entry(job, build(job), now + spread_offset(key, job.interval))
                self._entries[key] = entry
                self._arm(entry)
        self.stats.probes = len(self._entries)
        sites = {key.site for key in self._entries}
        self._bursts.retain(sites)
        for site in [site for site in self.stats.bursts if site not in sites]:
            del self.stats.bursts[site]
        for site in sites:  # every site shown, at 0 until its first burst
            self.stats.bursts.setdefault(site, 0)

    def run_now(self, keys: Iterable[ProbeKey], early: str = "run now") -> None:
        """Start these probes at once (those not already running), as early runs: their schedule stays."""
        now = self._loop.time()
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and not entry.running:
                if entry.fast_at < math.inf:  # this run takes the place of the pending early one
                    entry.fast_at = math.inf
                    self._arm(entry)
                self.stats.fast_runs += 1
                self._start(entry, now, early)

    def reprobe(self, site: str, reason: str) -> bool:
        """Run every probe of `site` at once, unless the site had a burst less than the gap ago or the scheduler
        is behind; whether it ran."""
        if self.behind() or not self._bursts.take(site, self._loop.time()):
            return False
        self._burst(site, reason)
        return True

    def behind(self) -> bool:
        """Whether bcd itself is short of time or slots (the last run on schedule started over BEHIND late): then
        failures may be its own doing, and early runs would only add to it. (Early runs' own waits for a slot
        do not count: a burst is meant to fill them.)"""
        return self._late > BEHIND

    def _burst(self, site: str, reason: str) -> None:
        keys = [key for key in self._entries if key.site == site]  # a scan, but at most one per site per gap
        self.stats.bursts[site] += 1
        log.info("site_reprobe", site=site, probes=len(keys), reason=reason)
        self.run_now(keys, f"re-probe of {site}: {reason}")

    async def run(self, ready: asyncio.Event) -> None:
        """Its lifetime (bcd.lifetime): probes run on the loop's timers from `sync` on; when cancelled, every
        job is dropped and the runs in flight are cancelled and awaited."""
        await hold(ready, self.stop)

    async def stop(self) -> None:
        for key in list(self._entries):
            self._remove(key)
        self.stats.probes = 0
        self._heap.clear()
        self._set_timer(math.inf)
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _remove(self, key: ProbeKey) -> None:
        self._entries.pop(key).ticket = 0

    def _arm(self, entry: _Entry) -> None:
        entry.ticket = next(self._tickets)
        when = entry.fast_at if entry.fast_at < entry.due else entry.due
        heapq.heappush(self._heap, (when, entry.ticket, entry))
        if when < self._timer_at:
            self._set_timer(when)

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(when, self._wake) if when < math.inf else None
        self._timer_at = when

    def _wake(self) -> None:
        """Fire every entry now due, then sleep until the next one."""
        self._timer, self._timer_at = None, -math.inf  # entries re-armed meanwhile set no timer of their own
        heap = self._heap
        limit = self._loop.time() + EARLY
        while heap and heap[0][0] <= limit:
            _, ticket, entry = heapq.heappop(heap)
            if entry.ticket == ticket:
                self._fire(entry)
        self._timer_at = math.inf
        if heap:
            self._set_timer(heap[0][0])

    def _fire(self, entry: _Entry) -> None:
        entry.ticket = 0
        if entry.fast_at <= entry.due:
            self._fire_early(entry)
            return
        if entry.running:
            self.stats.skipped += 1
        else:
            self._start(entry, entry.due)
        interval = entry.job.interval
        entry.due += interval
        now = self._loop.time()
        if entry.due < now:  # fell a whole interval behind: skip ahead, count the missed runs
            behind = int((now - entry.due) // interval) + 1
            self.stats.skipped += behind
            entry.due += behind * interval
        if self._entries.get(entry.job.key) is entry:
            self._arm(entry)

    def _fire_early(self, entry: _Entry) -> None:
        """A fast confirmation run; a due time at most half a fast_interval after it is skipped (this run takes
        its place), then the entry waits for its next due time."""
        due, entry.fast_at = entry.fast_at, math.inf
        fast = entry.job.fast_interval or entry.job.interval
        if entry.running:
            self.stats.skipped += 1
        else:
            self.stats.fast_runs += 1
            self._start(entry, due, f"fast confirmation every {fast:g}s")
        if entry.due - self._loop.time() <= fast / 2:
            entry.due += entry.job.interval
        if self._entries.get(entry.job.key) is entry:
            self._arm(entry)

    def _start(self, entry: _Entry, due: float, early: str = "") -> None:
        entry.running = True
        task = self._loop.create_task(self._run(entry, due, early))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hasten(self, entry: _Entry, started: float, verdict: int) -> None:
        """Act on a result that leaves its site in doubt: the next run `fast_interval` after this one started
        (unless it is due sooner anyway), and on a first failure, perhaps a burst of its site."""
        job = entry.job
        now = self._loop.time()
        if self.behind():
            return
        if verdict & SUSPECT:
            reason = self._bursts.failed(job.key.site, job.key.service, now)
            if reason is not None:
                self._burst(job.key.site, reason)
        fast = job.fast_interval
        if fast is None or fast >= job.interval or self._entries.get(job.key) is not entry:
            return
        at = max(started + fast, now)
        if at < entry.due and at < entry.fast_at:
            entry.fast_at = at
            self._arm(entry)

    async def _run(self, entry: _Entry, due: float, early: str = "") -> None:
        job = entry.job
        try:
            async with self._slots:
                started = self._loop.time()
                self._record_start(started - due)
                if not early:
                    self._late = started - due
                self.stats.in_flight += 1
                try:
                    result = await self._probe(job, entry.probe)
                finally:
                    self.stats.in_flight -= 1
            entry.runs += 1
            self.progress += 1
            if self._entries.get(job.key) is entry:
                verdict = self._sink(self._observation(job.key, result, early))
                if verdict:
                    self._hasten(entry, started, verdict)
        except Exception:  # the one catch-all of a probe task: log, keep the daemon alive
            log.exception("probe_task_failed", service=job.key.service, site=job.key.site, probe=job.key.probe)
        finally:
            entry.running = False

    def _record_start(self, lateness: float) -> None:
        lateness = max(lateness, 0.0)
        self.stats.started += 1
        self.stats.lateness.observe(lateness)
        self.stats.max_lateness = max(self.stats.max_lateness, lateness)

    async def _probe(self, job: Job, probe: Probe) -> ProbeResult:
        """Run the probe; one that outlives its own timeout by GRACE is cut off (a safety net: each probe
        keeps its own deadline) by the sweep, and that is a failed check."""
        begin = self._loop.time()
        task: asyncio.Task[None] = asyncio.current_task()  # type: ignore[assignment]
        self._limits[task] = begin + job.timeout + GRACE
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(SWEEP, self._sweep)
        try:
            return await probe.run()
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            task.uncancel()
            return ProbeResult(Result.FAIL, self._loop.time() - begin, f"timeout after {job.timeout:g}s")
        except Exception as exc:  # a probe must not raise; if one does, it is a failed check, not a crash
            log.exception("probe_raised", service=job.key.service, site=job.key.site, probe=job.key.probe)
            return ProbeResult(Result.FAIL, self._loop.time() - begin, f"probe error: {exc!r}"[:200],
                               internal=local_shortage(exc))
        finally:
            del self._limits[task]
            self._cut.discard(task)

    def _sweep(self) -> None:
        """Cut off the runs past their limit; look again while any run is in flight."""
        now = self._loop.time()
        for task, limit in self._limits.items():
            if limit <= now and task not in self._cut:
                self._cut.add(task)
                task.cancel()
        self._sweeper = self._loop.call_later(SWEEP, self._sweep) if self._limits else None

    def _observation(self, key: ProbeKey, result: ProbeResult, early: str) -> Observation:
        return Observation(
            key=key,
            result=result.result,
            latency=result.latency,
            reason=result.reason,
            at=self._wall_clock(),
            vantage=self._vantage,
            cert_expiry=result.cert_expiry,
            perfdata=result.perfdata,
            internal=result.internal,
            early=early,
        )
