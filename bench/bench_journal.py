"""Benchmark of the journal's write cost with and without the hash chain (bcd.ledger), at 2,000 probes/s.

The engine writes only what changes: a probe result that changes a site's state stages its site row and a
`site_transition` event, and one in three also a service row and a `service_status` event; the writer commits
what one 50 ms window staged in one transaction, then logs (JSON, as the daemon does; to /dev/null here) and
publishes each event. This drives the real JournalWriter on real SQLite files with that pattern: 2,000 probe
results per simulated second, a share of them changes (several shares), 20 flushes per second.

Measured per simulated second, as CPU time (process time) inside the flushes: the commit alone (the
transaction, the part the chain changes) and the whole flush (commit, log lines, publishing); and what the
chain adds as a share of one core (the daemon spends about 0.8 core on 2,000 probes/s: README, Benchmark).
Chained and plain journals are measured alternately in the same process, round after round; medians compared.

    python bench/bench_journal.py            # about a minute
    python bench/bench_journal.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bcd import logging as bcd_logging
from bcd.bus import Bus
from bcd.events import Event, EventKind, ServiceStatusChanged, SiteTransition
from bcd.journal import Journal, SavedService, SavedSite
from bcd.journal_writer import FLUSH_DELAY, JournalWriter

PROBES_PER_SECOND = 2_000
SERVICES = 1_000  # two sites each, one probe per site at a 1 s interval: 2,000 probes/s
REASON = "3 consecutive failures: HTTP 503 from https://payroll-{n}.dorset.example.org/health (after 212 ms)"
TARGET = 5.0  # percent


class _NoTimer:
    def cancel(self) -> None:
        pass


@dataclass
class Measured:
    commit: float  # CPU seconds in the transaction, per simulated second
    flush: float  # CPU seconds in the whole flush, per simulated second
    events: int


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


def simulate(path: Path, *, chained: bool, share: float, seconds: int) -> Measured:
    """`seconds` simulated seconds of 2,000 probe results with `share` of them changing a site's state."""
    journal = Journal(path, chained=chained)
    bus = Bus()
    subscriber = bus.subscribe("bench")
    writer = JournalWriter(journal, bus, call_later=lambda delay, callback: _NoTimer())
    commit_cpu = 0.0
    transaction = journal.transaction

    @contextlib.contextmanager
    def timed(*, sync: bool = True) -> Iterator[None]:
        nonlocal commit_cpu
        start = time.process_time()
        with transaction(sync=sync):
            yield
        commit_cpu += time.process_time() - start

    journal.transaction = timed  # type: ignore[method-assign]
    flushes = int(1 / FLUSH_DELAY)
    per_flush = PROBES_PER_SECOND // flushes
    every = max(1, round(1 / share))
    flush_cpu, events, n = 0.0, 0, 0
    for second in range(seconds):
        for window in range(flushes):
            now = 1.8e9 + second + window * FLUSH_DELAY
            for _ in range(per_flush):
                n += 1
                if n % every:
                    continue
                service, site = f"service-{n % SERVICES}", ("dorset", "hampshire")[n % 2]
                states = ("up", "down") if n % 4 < 2 else ("down", "up")
                writer.sites[(service, site)] = SavedSite(service, site, states[1], False, None, "", now, REASON)
                writer.emit(Event(EventKind.SITE_TRANSITION, now, service, site, REASON.format(n=n),
                                  SiteTransition(*states)), from_state=states[0], to_state=states[1])
                events += 1
                if n % 3 == 0:
                    writer.services[service] = SavedService(service, "at_risk", "dorset", now, REASON)
                    writer.emit(Event(EventKind.SERVICE_STATUS, now, service, None, REASON.format(n=n),
                                      ServiceStatusChanged("ok", "at_risk", "dorset", None)))
                    events += 1
            start = time.process_time()
            writer.flush()
            flush_cpu += time.process_time() - start
            while not subscriber.queue.empty():
                subscriber.queue.get_nowait()
    writer.close()
    journal.close()
    return Measured(commit_cpu / seconds, flush_cpu / seconds, events)


def main(quick: bool) -> int:
    shares = (0.01,) if quick else (0.001, 0.01, 0.05)
    rounds, seconds = (3, 2) if quick else (7, 4)
    worst = 0.0
    print(f"journal write cost at {PROBES_PER_SECOND} probes/s, CPU ms per second (median of {rounds} rounds, "
          f"chained and plain alternately)")
    with tempfile.TemporaryDirectory() as tmp, quiet_logging():
        for share in shares:
            results: dict[bool, list[Measured]] = {True: [], False: []}
            for index in range(rounds):
                for chained in (index % 2 == 0, index % 2 != 0):
                    path = Path(tmp) / f"j-{share}-{index}-{chained}.sqlite"
                    results[chained].append(simulate(path, chained=chained, share=share, seconds=seconds))
            plain_commit = statistics.median(m.commit for m in results[False])
            chain_commit = statistics.median(m.commit for m in results[True])
            plain_flush = statistics.median(m.flush for m in results[False])
            chain_flush = statistics.median(m.flush for m in results[True])
            events = results[True][0].events / seconds
            added = (chain_flush / plain_flush - 1) * 100
            worst = max(worst, added)
            print(f"  {share * 100:4.1f} % of results change a state ({events:5.0f} events/s): "
                  f"commit {plain_commit * 1e3:6.2f} -> {chain_commit * 1e3:6.2f} ms "
                  f"({(chain_commit / plain_commit - 1) * 100:+5.1f} %), "
                  f"whole flush {plain_flush * 1e3:6.2f} -> {chain_flush * 1e3:6.2f} ms ({added:+5.1f} %); "
                  f"the chain costs {(chain_flush - plain_flush) * 1e3:.2f} ms of CPU a second "
                  f"({(chain_flush - plain_flush) * 100:.3f} % of a core)", file=sys.__stdout__, flush=True)
    verdict = "holds" if worst < TARGET else "does NOT hold"
    print(f"target: chaining adds < {TARGET:.0f} % to the whole flush: {verdict} (worst {worst:+.1f} %)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    sys.exit(main(parser.parse_args().quick))
