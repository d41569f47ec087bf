"""Benchmark of the journal's write cost with and without the hash chain (bcd.journal.ledger), at 2,000 probes/s.

The engine writes only what changes: a probe result that changes a site's state stages its site row and a
`site_transition` event, and one in three also a service row and a `service_status` event; the writer commits
what one 50 ms window staged in one transaction, then logs (JSON, as the daemon does; to /dev/null here) and
publishes each event. This drives the real JournalWriter on real SQLite files with that pattern: 2,000 probe
results per simulated second, a share of them changes (several shares), 20 flushes per second.

Measured per simulated second, as CPU time (process time) inside the flushes: the commit alone (the writer's
transaction, once: the writes that join it are not timed again) and the whole flush (commit, log lines,
publishing); and what the chain adds as a share of one core (the daemon spends about 0.8 core on 2,000 probes/s:
README, Benchmark). A plain journal, a chained one and a second plain one (the control: what this method reads
where nothing differs, its noise) are fed the same changes and flushed in lockstep, window by window, in turns.

The chained journal seals its events entries (hashes them in one pass, bcd.journal.ledger) by the simulated clock, as
the daemon does by its own. What the chain adds to the commit is split into the seals (the hashing: each entry's
canonical JSON and SHA-256) and the rest (the rows kept for their seal, the `seq` column, the bookkeeping); and
the seals' work is timed again on the same rows in a tight loop (warm caches, best of three): the least the
hashing can cost (compiled, as the daemon does it where bcd/journal/_chain.c is built, and in Python), so the
least it can add to the commit.

    python bench/bench_journal.py            # about 20 s
    python bench/bench_journal.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcd import logging as bcd_logging
from bcd.bus import Bus
from bcd.events import Event, EventKind, ServiceStatusChanged, SiteTransition
from bcd.journal import Journal, SavedService, SavedSite
from bcd.journal.ledger import EVENT_COLUMNS, GENESIS, HASHING, python_seal_hashes, seal_hashes
from bcd.journal.writer import FLUSH_DELAY, JournalWriter

PROBES_PER_SECOND = 2_000
SERVICES = 1_000  # two sites each, one probe per site at a 1 s interval: 2,000 probes/s
REASON = "3 consecutive failures: HTTP 503 from https://payroll-{n}.dorset.example.org/health (after 212 ms)"
TARGET = 5.0  # percent
ROUNDS = 5  # per share: the machine's other work makes one round's figure wander by a few percent


class _NoTimer:
    def cancel(self) -> None:
        pass


@contextlib.contextmanager
def quiet_logging() -> Iterator[None]:
    """The daemon's JSON log lines, rendered as it renders them, written to /dev/null."""
    saved = sys.stderr
    with open(os.devnull, "w") as null:
        sys.stderr = null
        bcd_logging.setup("info", json=True)
        try:
            yield
        finally:
            sys.stderr = saved


@dataclass
class Side:
    """One journal and its writer, with the CPU time spent in its commits and in its whole flushes."""

    journal: Journal
    writer: JournalWriter
    subscriber: Any
    commit: float = 0.0
    flush: float = 0.0
    seal: float = 0.0  # inside `commit`: the seals (chained only)
    sealed: int = 0  # events entries sealed

    @classmethod
    def open(cls, path: Path, *, chained: bool, clock: Callable[[], float]) -> Side:
        journal = Journal(path, chained=chained, clock=clock)  # seals are due by the simulated clock
        bus = Bus()
        side = cls(journal, JournalWriter(journal, bus, call_later=lambda delay, callback: _NoTimer()),
                   bus.subscribe("bench"))
        transaction = journal.transaction

        @contextlib.contextmanager
        def timed(*, sync: bool = True) -> Iterator[None]:
            if journal.in_transaction:  # one joined by a write inside it (append_events): timed with that one
                with transaction(sync=sync):
                    yield
                return
            begun = time.process_time()
            with transaction(sync=sync):
                yield
            side.commit += time.process_time() - begun

        journal.transaction = timed  # type: ignore[method-assign]
        if (ledger := journal.ledger) is not None:
            seal = ledger.seal

            def timed_seal() -> None:
                side.sealed += ledger.unsealed
                begun = time.process_time()
                seal()
                side.seal += time.process_time() - begun

            ledger.seal = timed_seal  # type: ignore[method-assign]
        return side

    def timed_flush(self) -> None:
        begun = time.process_time()
        self.writer.flush()
        self.flush += time.process_time() - begun
        while not self.subscriber.queue.empty():
            self.subscriber.queue.get_nowait()

    def close(self) -> None:
        """Seal the events of the last seconds (counted: as the daemon's seal timer would), then close."""
        begun = time.process_time()
        self.journal.seal()
        self.flush += time.process_time() - begun
        counted = self.commit, self.seal
        self.writer.close()
        self.journal.close()
        self.commit, self.seal = counted


def stage(writer: JournalWriter, n: int, now: float) -> int:
    """What the engine stages for the n-th probe result when it changes a site's state; the events staged."""
    service, site = f"service-{n % SERVICES}", ("dorset", "hampshire")[n % 2]
    states = ("up", "down") if n % 4 < 2 else ("down", "up")
    writer.sites[(service, site)] = SavedSite(service, site, states[1], False, None, "", now, REASON)
    writer.emit(Event(EventKind.SITE_TRANSITION, now, service, site, REASON.format(n=n), SiteTransition(*states)),
                from_state=states[0], to_state=states[1])
    if n % 3:
        return 1
    writer.services[service] = SavedService(service, "at_risk", "dorset", now, REASON)
    writer.emit(Event(EventKind.SERVICE_STATUS, now, service, None, REASON.format(n=n),
                      ServiceStatusChanged("ok", "at_risk", "dorset", None)))
    return 2


def hashing_floor(path: Path) -> tuple[float, float]:
    """Seconds of CPU per entry that the seals' work (bcd.journal.ledger.seal_hashes) takes on the journal's events
    rows in a tight loop, warm (the best of three): as the daemon does it, and in Python."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute(f"SELECT {', '.join(EVENT_COLUMNS)}, seq FROM events WHERE seq IS NOT NULL "
                          "ORDER BY id").fetchall()
    finally:
        db.close()
    floors = []
    for hashes in (seal_hashes, python_seal_hashes):
        best = float("inf")
        for _ in range(3):
            begun = time.process_time()
            for start in range(0, len(rows), 1024):
                hashes(GENESIS, rows[start:start + 1024])
            best = min(best, time.process_time() - begun)
        floors.append(best / max(1, len(rows)))
    return floors[0], floors[1]


def simulate(folder: Path, share: float, seconds: int) -> tuple[Side, Side, Side, int]:
    """`seconds` simulated seconds of 2,000 probe results, `share` of them changing a site's state, written to
    a plain journal, a chained one and a second plain one (the control: what the method reads where nothing
    differs) in lockstep: each 50 ms window is flushed by all three, one right after the other (in turns, which
    first), so the machine's load weighs on them alike. Returns (plain, chained, control, events)."""
    clock = [0.0]
    plain = Side.open(folder / "plain.sqlite", chained=False, clock=lambda: clock[0])
    chained = Side.open(folder / "chained.sqlite", chained=True, clock=lambda: clock[0])
    control = Side.open(folder / "control.sqlite", chained=False, clock=lambda: clock[0])
    sides = (plain, chained, control)
    flushes = int(1 / FLUSH_DELAY)
    every = max(1, round(1 / share))
    events, n = 0, 0
    for window in range(seconds * flushes):
        clock[0] = window * FLUSH_DELAY
        now = 1.8e9 + clock[0]
        for _ in range(PROBES_PER_SECOND // flushes):
            n += 1
            if n % every == 0:
                events += stage(plain.writer, n, now)
                stage(chained.writer, n, now)
                stage(control.writer, n, now)
        first = window % len(sides)
        for side in sides[first:] + sides[:first]:
            side.timed_flush()
    for side in sides:
        side.close()
    return plain, chained, control, events


SECONDS = {0.001: 300, 0.01: 60, 0.05: 60}  # simulated seconds per share: at 0.1 % a minute holds too few commits


def main(quick: bool) -> int:
    shares = (0.01,) if quick else (0.001, 0.01, 0.05)
    rounds = 1 if quick else ROUNDS
    worst = [-float("inf"), -float("inf")]  # what the chain adds to the whole flush, to the commit alone
    print(f"journal write cost at {PROBES_PER_SECOND} probes/s, CPU ms per second over "
          f"{'5' if quick else ', '.join(str(SECONDS[share]) for share in shares)} simulated seconds "
          f"(plain, chained and a second plain journal flushed in lockstep; the median of {rounds} rounds; "
          f"the seals hashed by "
          f"{'bcd/journal/_chain.c' if HASHING == 'compiled' else 'Python: _chain.c is not built'})")
    with quiet_logging():
        for share in shares:
            seconds = 5 if quick else SECONDS[share]
            runs, floors = [], []
            for _ in range(rounds):
                with tempfile.TemporaryDirectory() as tmp:
                    runs.append(simulate(Path(tmp), share, seconds))
                    floors.append(hashing_floor(Path(tmp) / "chained.sqlite"))
            best = (min(floor for floor, _ in floors), min(python for _, python in floors))
            worst = [max(pair) for pair in zip(worst, report(share, seconds, runs, best), strict=True)]
    for what, added in zip(("the whole flush", "the SQLite commit alone"), worst, strict=True):
        verdict = "holds" if added < TARGET else "does NOT hold"
        print(f"target: chaining adds < {TARGET:.0f} % to {what}: {verdict} (worst median {added:+.1f} %)")
    return 0


def added(runs: list[tuple[Side, Side, Side, int]], side: int, cost: str) -> list[float]:
    """Per round, what side `side` (1: chained, 2: the control) costs over the plain journal, in percent."""
    return [(getattr(run[side], cost) / getattr(run[0], cost) - 1) * 100 for run in runs]


def rounded(percents: list[float]) -> str:
    return ", ".join(f"{percent:+.1f}" for percent in percents)


def report(share: float, seconds: int, runs: list[tuple[Side, Side, Side, int]],
           floors: tuple[float, float]) -> tuple[float, float]:
    """Print one share's figures (the median round by the whole flush); returns the medians of what the chain adds
    to the whole flush and to the commit."""
    plain, chained, _, events = sorted(runs, key=lambda run: run[1].flush / run[0].flush)[len(runs) // 2]
    medians = []
    lines = []
    for cost, name in (("commit", "the commit"), ("flush", "whole flush")):
        chain, control = added(runs, 1, cost), added(runs, 2, cost)
        medians.append(statistics.median(chain))
        lines.append(f"{name:>12} {getattr(plain, cost) / seconds * 1e3:6.2f} -> "
                     f"{getattr(chained, cost) / seconds * 1e3:6.2f} ms, chained {medians[-1]:+5.1f} % (rounds "
                     f"{rounded(chain)}); a second plain journal {statistics.median(control):+5.1f} % "
                     f"(rounds {rounded(control)})")
    rest = chained.commit - chained.seal - plain.commit
    floor, python_floor = floors
    print(f"  {share * 100:4.1f} % of results change a state ({events / seconds:5.0f} events/s; the chain costs "
          f"{(chained.flush - plain.flush) / seconds * 1e3:.2f} ms of CPU a second, "
          f"{(chained.flush - plain.flush) / seconds * 100:.3f} % of a core)\n        " + "\n        ".join(lines) +
          f"\n        in the commit: the seals {chained.seal / seconds * 1e3:.2f} ms "
          f"({chained.seal / max(1, chained.sealed) * 1e6:.1f} us an event, "
          f"{chained.seal / plain.commit * 100:+.1f} %), "
          f"the rest (the rows kept for their seal, the seq column, bookkeeping) {rest / seconds * 1e3:.2f} ms "
          f"({rest / plain.commit * 100:+.1f} %); the seals' work in a tight loop {floor * 1e6:.1f} us an event (in "
          f"Python {python_floor * 1e6:.1f} us), the plain commit {plain.commit / max(1, events) * 1e6:.0f} us an "
          f"event: the least the hashing can add to the commit {floor * events / plain.commit * 100:+.1f} %",
          file=sys.__stdout__, flush=True)
    return medians[1], medians[0]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    sys.exit(main(parser.parse_args().quick))
