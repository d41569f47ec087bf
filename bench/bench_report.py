"""Benchmark of a continuity report over one year of a 200-service journal (about a million events).

The journal is written with the real Journal (hash-chained, as the daemon writes it) into a real SQLite file:
400 sites (two per service), each with a failing check that clears 20 s later every few hours, a failure
confirmed `down` about once a month (the active site's: a failover run, its steps, the active site changed,
and a failback a day later), a maintenance window a month and a drill a quarter for most services; the
service status changes that go with them; the daemon restarted once a month (ten minutes unobserved).

Then `bcd report`'s work (the config loaded, the journal read read-only, the report computed and rendered as
HTML) runs in a fresh process, which reports its wall and CPU time and its peak RSS. Targets: < 5 s (wall) and
< 200 MB. On a machine shared with other work the wall time grows with the load: the CPU time shows the cost.

    python bench/bench_report.py            # writes the journal (about a minute), then the report
    python bench/bench_report.py --keep DIR # keep the state_dir and config in DIR (reused when there)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from bcd.drills.records import DrillJournal
from bcd.events import (
    ActiveChanged,
    DrillFinished,
    DrillStarted,
    Event,
    EventKind,
    ServiceStatusChanged,
    SiteTransition,
)
from bcd.journal import Journal, RunJournal, RunRecord, StepRecord
from bcd.journal.uptime import SCHEMA as SPANS_SCHEMA
from bcd.model import RunResult

SERVICES = 200
SITES = ("dorset", "hampshire")
START = 1_767_225_600.0  # 2026-01-01 UTC
YEAR = 365 * 86400.0
BLIP_EVERY = 10.5 * 3600  # a failing check that clears: two transitions and a status change
DOWN_EVERY = 30 * 86400.0
TARGET_SECONDS, TARGET_MB = 5.0, 200.0
REASON = "3 consecutive failures: HTTP 503 from https://payroll-{n}.dorset.example.org/health (after 212 ms)"

Item = tuple[float, int, str, str, str | None, tuple[str, ...]]  # at, order, kind, service, site, data


def config(state_dir: Path) -> dict[str, Any]:
    services = {}
    for n in range(SERVICES):
        services[f"svc-{n:03d}"] = {
            "active": "dorset", "objectives": {"rto": "15m", "rpo": "5m"} if n % 10 else {"rto": "15m"},
            "failover": {"runbook": "move"} if n % 25 else None,
            "sites": {site: {"probes": [{"name": "health", "http": {"url": f"http://127.0.0.1:9/{n}/{site}"}}]}
                      for site in SITES}}
        if services[f"svc-{n:03d}"]["failover"] is None:
            del services[f"svc-{n:03d}"]["failover"]
    return {"instance": "bench", "state_dir": str(state_dir), "sites": {site: {} for site in SITES},
            "runbooks": {"move": {"steps": [{"name": "hold", "approval": {"timeout": "1h"}}]}}, "services": services}


def site_events(rng: random.Random, service: str, site: str) -> Iterator[Item]:
    """One site's transitions over the year, in time order."""
    yield START - 60, 0, "t", service, site, ("unknown", "up")
    t = START + rng.uniform(0, BLIP_EVERY)
    next_down = START + rng.uniform(0, DOWN_EVERY)
    next_maintenance = START + rng.uniform(0, DOWN_EVERY)
    while t < START + YEAR - 3600:
        if t >= next_down:
            yield t, 0, "t", service, site, ("up", "degraded")
            yield t + 20, 0, "t", service, site, ("degraded", "down")
            yield t + 20, 1, "s", service, None, ("ok", "failover_pending")
            if site == "dorset":  # a failover (a quarter of them slow: over the RTO), its failback a day later
                took = 1200.0 if rng.random() < 0.25 else 300.0
                for kind, start, moves in (("failover", t + 30, SITES), ("failback", t + 86400, SITES[::-1])):
                    yield start, 2, "run", service, kind, (*moves, str(took), str(t if kind == "failover" else ""))
                    yield start + took, 2, "active", service, None, moves
            yield t + 1800, 0, "t", service, site, ("down", "up")
            yield t + 1800, 1, "s", service, None, ("failover_pending", "ok")
            next_down += DOWN_EVERY * rng.uniform(0.5, 1.5)
            t += 3600
        elif t >= next_maintenance:
            yield t, 0, "t", service, site, ("up", "maintenance")
            yield t + 7200, 0, "t", service, site, ("maintenance", "up")
            next_maintenance += DOWN_EVERY
            t += 7200 + 60
        else:
            yield t, 0, "t", service, site, ("up", "degraded")
            yield t + 20, 0, "t", service, site, ("degraded", "up")
            yield t + 20, 1, "s", service, None, ("at_risk", "ok")
        t += BLIP_EVERY * rng.uniform(0.5, 1.5)


def write(journal_path: Path) -> int:
    rng = random.Random(14)
    streams = [site_events(random.Random(rng.random()), f"svc-{n:03d}", site)
               for n in range(SERVICES) for site in SITES]
    journal = Journal(journal_path)
    runs = RunJournal(journal)
    count = 0
    batch = journal.transaction(sync=False)
    batch.__enter__()
    for at, _, kind, service, site, data in sorted(item for stream in streams for item in stream):
        assert service is not None
        if kind == "t":
            journal.append(Event(EventKind.SITE_TRANSITION, at, service, site, REASON, SiteTransition(*data)))
        elif kind == "s":
            journal.append(Event(EventKind.SERVICE_STATUS, at, service, None, REASON,
                                 ServiceStatusChanged(data[0], data[1], "dorset", None)))
        elif kind == "active":
            journal.append(Event(EventKind.ACTIVE_CHANGED, at, service, None, "run", ActiveChanged(*data, None)))
        else:
            assert site is not None
            run(runs, service, site, (data[0], data[1]), at, at + float(data[2]), float(data[3]) if data[3] else None,
                {})
        count += 1
        if count % 20_000 == 0:
            batch.__exit__(None, None, None)
            batch = journal.transaction(sync=False)
            batch.__enter__()
    batch.__exit__(None, None, None)
    with journal.transaction(sync=False):
        drills(journal, runs)
    journal.execute(SPANS_SCHEMA)
    for month in range(12):
        start = START - 3600 + month * YEAR / 12
        stop = START + (month + 1) * YEAR / 12 - 600
        journal.execute("INSERT INTO daemon_spans VALUES (?, ?, ?, ?)", (start, stop, stop, 1000 + month))
    journal.close()
    return count


def drills(journal: Journal, runs: RunJournal) -> None:
    """A drill a quarter for half the services, journaled as the drill runner does (its start, its leg's run,
    its end), with the daemon's index of drill events."""
    DrillJournal(journal)
    for n in range(0, SERVICES, 2):
        for quarter in range(4):
            start = START + quarter * YEAR / 4 + n * 600
            drill, service = f"svc-{n:03d}@q{quarter}", f"svc-{n:03d}"
            journal.append(Event(EventKind.DRILL_STARTED, start, service, "hampshire", f"drill {drill}",
                                 DrillStarted(drill, "round_trip", 0.0, "bench", "dorset", "hampshire")))
            run(runs, service, "failover", ("dorset", "hampshire"), start, start + 400, None, {"drill": drill})
            journal.append(Event(EventKind.DRILL_FINISHED, start + 401, service, None, f"drill {drill} succeeded",
                                 DrillFinished(drill, "round_trip", "succeeded", ())))


def run(runs: RunJournal, service: str, kind: str, moves: tuple[str, str], started: float,  # noqa: PLR0917
        verified: float, detected: float | None, evidence: dict[str, object]) -> None:
    run_id = runs.create(RunRecord(0, service, "move", kind, "auto", "bench", moves[0], moves[1], False, False,
                                   evidence, started, None, "running", "", None, detected, None))
    runs.step_started(StepRecord(run_id, 1, "main", "switch", "command", {}, started + 1, None, 0, "running", ""))
    runs.step_finished(run_id, 1, ended=verified, attempts=1, outcome="succeeded", output="")
    runs.finish(run_id, RunResult.SUCCEEDED, verified + 1, "done", verified_at=verified)


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM; getrusage's ru_maxrss keeps the forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(config_path: str) -> int:
    """In the child: `bcd report`'s work, timed; prints one JSON line."""
    began, cpu = time.perf_counter(), time.process_time()
    from bcd import config as config_module
    from bcd.report.make import make_report
    from bcd.report.render_html import render_html

    loaded = config_module.load(config_path)
    configured = time.perf_counter()
    made = make_report(loaded, START, START + YEAR, now=START + YEAR + 86400)
    computed = time.perf_counter()
    html = render_html(made)
    rendered = time.perf_counter()
    print(json.dumps({"config": configured - began, "compute": computed - configured, "render": rendered - computed,
                      "total": rendered - began,
                      "cpu": time.process_time() - cpu,
                      "rss_mb": peak_rss_mb(),
                      "html_kb": len(html) / 1024, "risks": len(made.risks),
                      "incidents": sum(len(s.incidents) for s in made.services)}))
    return 0


def main(keep: str | None) -> int:
    with tempfile.TemporaryDirectory(prefix="bcd-bench-report-") as tmp:
        where = Path(keep or tmp)
        journal_path, config_path = where / "state" / "bcd.sqlite", where / "bcd.yaml"
        if not journal_path.exists():
            began = time.perf_counter()
            config_path.parent.mkdir(parents=True, exist_ok=True)
            config_path.write_text(yaml.safe_dump(config(where / "state")))
            events = write(journal_path)
            size = journal_path.stat().st_size / 2**20
            print(f"journal: {events:,} events of {SERVICES} services over a year written (chained) in "
                  f"{time.perf_counter() - began:.0f} s; {size:.0f} MB")
        done = subprocess.run([sys.executable, __file__, "--report", str(config_path)], capture_output=True,
                              text=True, check=True)
        figures = json.loads(done.stdout.splitlines()[-1])
    ok = figures["total"] < TARGET_SECONDS and figures["rss_mb"] < TARGET_MB
    print(f"report over a year, {SERVICES} services: {figures['total']:.2f} s wall, {figures['cpu']:.2f} s CPU "
          f"(config {figures['config']:.2f}, "
          f"compute {figures['compute']:.2f}, render {figures['render']:.2f}), peak RSS {figures['rss_mb']:.0f} MB; "
          f"{figures['incidents']} incidents, {figures['risks']} risks, HTML {figures['html_kb']:.0f} kB")
    print(f"target: < {TARGET_SECONDS:.0f} s and < {TARGET_MB:.0f} MB: {'met' if ok else 'NOT met'}")
    return 0  # a verdict, not a failure: `make bench` runs every benchmark


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="keep (and reuse) the state_dir and config in this directory")
    parser.add_argument("--report", help=argparse.SUPPRESS)  # the child's part
    args = parser.parse_args()
    sys.exit(report(args.report) if args.report else main(args.keep))
