"""Periodic probe runs: a heap of due times under one event-loop timer, spread start times, a global cap.

Each probe is due every `interval` seconds on the monotonic clock, at a fixed offset inside the interval
derived from its key (stable across restarts, so a fleet of probes never fires as a herd). Due times wait
in one heap under a single event-loop timer armed for the earliest (a timer per probe costs ~600 bytes each
on uvloop: 12 MB at 20,000 probes). A run that is still in flight when the next one is due is skipped and
counted, never queued twice. Lateness — how long after its due time a run actually started (after waiting
for a concurrency slot) — is measured per run. A run that outlives its probe's own timeout by GRACE is cut
off by a sweep of the runs in flight.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from bcd.lifetime import hold
from bcd.model import Observation, ProbeKey, ProbeResult, Result
from bcd.probes.base import Probe, local_shortage
from bcd.stats import Histogram

log = structlog.get_logger("bcd.scheduler")

LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GRACE = 0.5  # seconds beyond a probe's own timeout before the scheduler cuts it off
SWEEP = 0.25  # how often runs in flight are checked against that limit (a timer per run costs ~20 µs)
EARLY = 0.001  # a run due this soon is started now (event-loop timers may fire up to a millisecond early)


@dataclass(frozen=True, slots=True)
class Job:
    """One probe to run periodically; `fingerprint` changes when its config does."""

    key: ProbeKey
    interval: float
    timeout: float
    fingerprint: bytes


@dataclass(slots=True)
class _Entry:
    job: Job
    probe: Probe
    due: float
    ticket: int = 0  # of its one valid place in the heap; older places are stale and skipped
    running: bool = False
    runs: int = 0


@dataclass(slots=True)
class SchedulerStats:
    """The scheduler's figures, for /metrics and the bench."""

    lateness: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKETS))
    started: int = 0
    skipped: int = 0
    max_lateness: float = 0.0
    in_flight: int = 0
    probes: int = 0  # scheduled


def spread_offset(key: ProbeKey, interval: float) -> float:
    """A stable offset in [0, interval) for this probe."""
    digest = zlib.crc32(f"{key.service}\0{key.site}\0{key.probe}".encode())
    return (digest % 100_000) / 100_000 * interval


class Scheduler:
    """Runs every job on its interval and hands each Observation to `sink`."""

    def __init__(
        self,
        sink: Callable[[Observation], None],
        max_concurrency: int,
        vantage: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._slots = asyncio.Semaphore(max_concurrency)
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
        self._loop = asyncio.get_running_loop()
        self.stats = SchedulerStats()
        self.progress = 0  # bumps on every finished run: the watchdog's sign of life

    @property
    def keys(self) -> set[ProbeKey]:
        return set(self._entries)

    def all_ran_once(self) -> bool:
        return all(entry.runs > 0 for entry in self._entries.values())

    def sync(self, jobs: Iterable[Job], build: Callable[[Job], Probe]) -> None:
        """Make the running set equal `jobs`: unchanged ones keep their schedule and probe object,
        new or changed ones get a probe from `build` and a fresh schedule."""
        wanted = {job.key: job for job in jobs}
        for key in list(self._entries):
            if key not in wanted or wanted[key].fingerprint != self._entries[key].job.fingerprint:
                self._remove(key)
        now = self._loop.time()
        for key, job in wanted.items():
            if key not in self._entries:
                entry = _Entry(job, build(job), now + spread_offset(key, job.interval))
                self._entries[key] = entry
                self._arm(entry)
        self.stats.probes = len(self._entries)

    def run_now(self, keys: Iterable[ProbeKey]) -> None:
        """Start these probes at once (e.g. to confirm a suspect site faster). Nothing calls it yet: issue 16
        wires it up (re-probe a suspect site at once); tests/unit/test_scheduler.py holds it to its word."""
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None and not entry.running:
                entry.ticket = 0
                entry.due = self._loop.time()
                self._fire(entry)

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
        heapq.heappush(self._heap, (entry.due, entry.ticket, entry))
        if entry.due < self._timer_at:
            self._set_timer(entry.due)

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
        if entry.running:
            self.stats.skipped += 1
        else:
            entry.running = True
            task = self._loop.create_task(self._run(entry, entry.due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        interval = entry.job.interval
        entry.due += interval
        now = self._loop.time()
        if entry.due < now:  # fell a whole interval behind: skip ahead, count the missed runs
            behind = int((now - entry.due) // interval) + 1
            self.stats.skipped += behind
            entry.due += behind * interval
        if self._entries.get(entry.job.key) is entry:
            self._arm(entry)

    async def _run(self, entry: _Entry, due: float) -> None:
        job = entry.job
        try:
            async with self._slots:
                started = self._loop.time()
                self._record_start(started - due)
                self.stats.in_flight += 1
                try:
                    result = await self._probe(job, entry.probe)
                finally:
                    self.stats.in_flight -= 1
            entry.runs += 1
            self.progress += 1
            if self._entries.get(job.key) is entry:
                self._sink(self._observation(job.key, result))
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

    def _observation(self, key: ProbeKey, result: ProbeResult) -> Observation:
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
        )
