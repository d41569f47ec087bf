"""Benchmark of detection time (issue 16): how soon a dead target or a dead site is declared, with the real
`Daemon` in this process and minimal HTTP targets on loopback (each its own listening socket, closed to kill it).

1. One service's active site dies (10 s interval, `fall: 3`, `fast_interval: 1s`, no site re-probes): the
   failover runbook (mode `auto`) must start within interval + 2 x fast_interval + 100 ms of the failure in the
   worst case. SERVICES services, each killed at its own random moment (their runs do not overlap), give the
   distribution; the median is printed beside the worst case.
2. A whole site of 200 services dies (every target closed at once, at a random moment of the interval), in
   TRIALS fresh daemons: every service of it must be `down` within 3 s of the failure at p99, and the probe load
   of the burst must stay within its bound: never more than `scheduler.max_concurrency` runs in flight, and no
   more early runs than the site's probes x max(fall, rise).

    python bench/bench_detection.py            # about 3 minutes
    python bench/bench_detection.py --quick    # fewer services and trials
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import structlog

from bcd.app import Daemon, load_config
from bcd.events import EventKind
from bcd.scheduler import Scheduler

INTERVAL, FAST, FALL = 10.0, 1.0, 3
SINGLE_BOUND = INTERVAL + 2 * FAST + 0.1
SITE_SIZE, SITE_BOUND, MAX_CONCURRENCY = 200, 3.0, 100
T = TypeVar("T")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nUP"


class Target:
    """A minimal HTTP responder on its own loopback port; `kill()` closes the listener (connection refused)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Target:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def kill(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


def estate(state_dir: str, dorset: list[Target], hampshire: Target, *, failover: bool, bursts: int) -> str:
    """The config file's text: one service per dorset target, each with hampshire as its standby."""
    lines = [f"instance: detect\nstate_dir: {state_dir}\nserver: {{listen: '127.0.0.1:0'}}\n"
             "sites: {dorset: {}, hampshire: {}}\n"
             f"defaults: {{interval: {INTERVAL:g}s, timeout: 500ms, rise: 1, fall: {FALL}, fast_interval: {FAST:g}s}}\n"
             f"scheduler: {{max_concurrency: {MAX_CONCURRENCY}, burst_failures: {bursts}, burst_window: 2s}}\n"
             "runner: {max_concurrent_runs: 100}\n"
             "runbooks: {move: {steps: [{name: wait, sleep: {duration: 0s}}]}}\nservices:\n"]
    for i, target in enumerate(dorset):
        move = "    failover: {runbook: move, mode: auto, cooldown: 0s}\n" if failover else ""
        lines.append(f"  svc{i:03}:\n    active: dorset\n{move}    sites:\n"
                     f"      dorset: {{probes: [{{name: health, http: {{url: '{target.url}'}}}}]}}\n"
                     f"      hampshire: {{probes: [{{name: health, http: {{url: '{hampshire.url}'}}}}]}}\n")
    return "".join(lines)


async def run_estate(count: int, *, failover: bool, bursts: int,
                     story: Callable[[Daemon, list[Target]], Awaitable[T]]) -> T:
    """Start `count` dorset targets, a hampshire target and a daemon over them; wait until every service is ok;
    then run `story(daemon, targets)`."""
    dorset = [await Target().start() for _ in range(count)]
    hampshire = await Target().start()
    with tempfile.TemporaryDirectory() as state_dir:
        path = Path(state_dir) / "bcd.yaml"
        path.write_text(estate(state_dir, dorset, hampshire, failover=failover, bursts=bursts))
        daemon = Daemon(str(path), load_config(str(path)))
        try:
            async with daemon.running():
                while not all(view.status == "ok" for view in daemon.engine.services.values()):  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # (the engine's table, polled: no event says "all ok")
                return await story(daemon, dorset)
        finally:
            for target in [*dorset, hampshire]:
                target.kill()


async def single_service(count: int) -> list[float]:
    """Seconds from each service's target dying to its failover run starting."""

    async def story(daemon: Daemon, dorset: list[Target]) -> list[float]:
        events = daemon.bus.subscribe("bench", size=10_000)
        killed: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        chooser = random.Random(16)
        spacing = SINGLE_BOUND + 1.0  # one service at a time: no two failures within a burst window either
        for i, target in enumerate(dorset):
            def kill(i: int = i, target: Target = target) -> None:
                target.kill()
                killed[f"svc{i:03}"] = time.time()
            loop.call_later(i * spacing / 4 + chooser.uniform(0, INTERVAL), kill)
        started: dict[str, float] = {}
        async with asyncio.timeout(len(dorset) * spacing + 60):
            while len(started) < len(dorset):
                event = await events.get()
                if event.kind == EventKind.RUN_STARTED and event.service is not None:
                    started[event.service] = event.at
        return [started[name] - killed[name] for name in sorted(started)]

    return await run_estate(count, failover=True, bursts=0, story=story)


async def whole_site() -> tuple[list[float], int, int, int]:
    """Seconds from the site dying to each service's dorset being down; the most runs in flight; early runs
    and bursts during those seconds."""

    async def story(daemon: Daemon, dorset: list[Target]) -> tuple[list[float], int, int, int]:
        scheduler = daemon.parts.scheduler
        events = daemon.bus.subscribe("bench", size=10_000)
        await asyncio.sleep(random.uniform(0, INTERVAL))
        early, bursts = scheduler.stats.fast_runs, sum(scheduler.stats.bursts.values())
        for target in dorset:
            target.kill()
        killed = time.time()
        peak = [0]
        sampler = asyncio.get_running_loop().create_task(sample_in_flight(scheduler, peak))
        down: dict[str, float] = {}
        try:
            async with asyncio.timeout(INTERVAL * FALL + 10):
                while len(down) < len(dorset):
                    event = await events.get()
                    if (event.kind == EventKind.SITE_TRANSITION and event.site == "dorset"
                            and event.to_json().get("to") == "down" and event.service is not None):
                        down[event.service] = event.at
        finally:
            sampler.cancel()
        return ([at - killed for at in down.values()], peak[0], scheduler.stats.fast_runs - early,
                sum(scheduler.stats.bursts.values()) - bursts)

    return await run_estate(SITE_SIZE, failover=False, bursts=2, story=story)


async def sample_in_flight(scheduler: Scheduler, peak: list[int]) -> None:
    """Keep the most runs in flight seen at any turn of the loop in `peak[0]`."""
    while True:
        peak[0] = max(peak[0], scheduler.stats.in_flight)
        await asyncio.sleep(0)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def main(quick: bool) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    print(f"bcd detection benchmark — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, interval {INTERVAL:g}s, "
          f"fall {FALL}, fast_interval {FAST:g}s, Python {sys.version.split()[0]}", flush=True)
    latencies = await single_service(8 if quick else 24)
    worst = max(latencies)
    print(f"one service's site dies → failover runbook starts: median {statistics.median(latencies):.2f} s, "
          f"p90 {percentile(latencies, 0.9):.2f} s, worst {worst:.2f} s of {len(latencies)} "
          f"(bound interval + 2 x fast_interval + 100 ms = {SINGLE_BOUND:.1f} s: "
          f"{'met' if worst <= SINGLE_BOUND else 'NOT met'})", flush=True)
    downs: list[float] = []
    for trial in range(2 if quick else 4):
        seconds, most, early, bursts = await whole_site()
        downs.extend(seconds)
        bound = SITE_SIZE * FALL  # each probe: one chain of at most max(fall, rise) - 1 early runs, plus its burst
        print(f"site of {SITE_SIZE} services dies (trial {trial + 1}): all down after {max(seconds):.2f} s "
              f"(median {statistics.median(seconds):.2f} s); {bursts} burst(s), {early} early runs (bound "
              f"{bound}), at most {most} runs in flight (bound max_concurrency {MAX_CONCURRENCY})", flush=True)
        if early > bound or most > MAX_CONCURRENCY:
            print("  BURST LOAD OVER ITS BOUND", flush=True)
    p99 = percentile(downs, 0.99)
    print(f"site of {SITE_SIZE} services dies → each service down: p50 {statistics.median(downs):.2f} s, "
          f"p99 {p99:.2f} s, max {max(downs):.2f} s over {len(downs)} services "
          f"(target p99 ≤ {SITE_BOUND:g} s: {'met' if p99 <= SITE_BOUND else 'NOT met'})", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.quick))
    except ImportError:
        asyncio.run(main(args.quick))
