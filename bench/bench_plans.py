"""Benchmark of recovery plans.

1. Planning a 500-service estate (four dependency levels): the groups, the critical path and the dry-run
   text, from a loaded config (target: < 50 ms).
2. A 200-service evacuation in the real daemon (in this process, probes answered by a loopback target):
   four dependency levels, every runbook one `sleep` step of 1 s, `parallel: 10`. It must finish within 1 s
   of its critical path plus services / parallel seconds; the plan's overhead is its time beyond what its
   groups need at best (the sum over groups of ceil(group size / parallel) seconds).

    python bench/bench_plans.py            # both
    python bench/bench_plans.py --quick    # a 60-service evacuation instead of 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bcd import config as config_module
from bcd import logging as bcd_logging
from bcd.app import Daemon
from bcd.demo_cluster import free_port
from bcd.events import EventKind, PlanServiceMoved
from bcd.operations import Accepted, RunPlan
from bcd.plans import planner

PLANNING_TARGET = 0.050
PARALLEL = 10
STEP_SECONDS = 1.0


def estate(counts: list[int]) -> dict[str, list[str]]:
    """Services in levels: each of level L > 1 needs two services of level L - 1 (service -> its needs)."""
    graph: dict[str, list[str]] = {}
    below: list[str] = []
    for level, count in enumerate(counts, start=1):
        here = [f"svc{level}x{index:03d}" for index in range(count)]
        for index, name in enumerate(here):
            graph[name] = sorted({below[index % len(below)], below[(3 * index + 1) % len(below)]}) if below else []
        below = here
    return graph


def config_data(graph: dict[str, list[str]], base: Path, target_port: int, listen: str) -> dict[str, Any]:
    probes = {site: {"probes": [{"name": "health", "http": {"url": f"http://127.0.0.1:{target_port}/{site}"}}]}
              for site in ("dorset", "hampshire")}
    return {
        "state_dir": str(base / "state"), "server": {"listen": listen},
        "sites": {"dorset": {}, "hampshire": {}},
        "defaults": {"interval": "5s", "timeout": "2s", "rise": 1, "fall": 2},
        "runner": {"max_concurrent_runs": 50},
        "runbooks": {"move": {"steps": [{"name": "work", "sleep": {"duration": f"{STEP_SECONDS:g}s"}}]}},
        "services": {name: {"active": "dorset", "depends_on": needs, "sites": probes,
                            "failover": {"runbook": "move", "mode": "manual", "cooldown": "0s"}}
                     for name, needs in graph.items()},
        "plans": {"evacuate": {"from": "dorset", "to": "hampshire", "parallel": PARALLEL}},
    }


def write_config(data: dict[str, Any], base: Path) -> Path:
    path = base / "bcd.yaml"
    path.write_text(json.dumps(data))
    return path


def bench_planning(base: Path) -> float:
    graph = estate([50, 100, 150, 200])
    path = write_config(config_data(graph, base, 1, "127.0.0.1:0"), base)
    config = config_module.load(path)
    plan_config = config.plans["evacuate"]
    active = {name: service.active for name, service in config.services.items()}
    seconds = dict.fromkeys(config.services, 30.0)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        planned = planner.plan(plan_config, config.services, active, seconds)
        text = planner.describe("evacuate", plan_config, planned, seconds)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    verdict = "ok" if median < PLANNING_TARGET else "TOO SLOW"
    print(f"planning {len(graph)} services: {len(planned.groups)} groups, critical path "
          f"{len(planned.critical.services)} services ({planned.critical.seconds:.0f}s), dry run "
          f"{len(text.splitlines())} lines: median {median * 1000:.1f} ms, max {max(times) * 1000:.1f} ms "
          f"(target < {PLANNING_TARGET * 1000:.0f} ms: {verdict})", flush=True)
    return median


async def _target(port: int) -> web.AppRunner:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="UP\n")

    app = web.Application()
    app.router.add_get("/{site}", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _ready(url: str, limit: float = 60.0) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(limit):
        while True:
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)


async def bench_evacuation(base: Path, counts: list[int]) -> float:

    graph = estate(counts)
    target_port, port = free_port(), free_port()
    target = await _target(target_port)
    path = write_config(config_data(graph, base, target_port, f"127.0.0.1:{port}"), base)
    daemon = Daemon(str(path), config_module.load(path))
    moves: dict[str, list[float]] = {}
    try:
        async with daemon.running(), daemon.bus.subscription("bench") as events:
            await _ready(f"http://127.0.0.1:{port}/readyz")
            outcome = await daemon.operations.perform(RunPlan("evacuate", "bench", "make bench"))
            assert isinstance(outcome, Accepted) and outcome.plan_run is not None, outcome
            started = time.monotonic()
            async for event in events:
                if isinstance(event.data, PlanServiceMoved) and event.service is not None:
                    moves.setdefault(event.service, []).append(time.monotonic())
                if event.kind is EventKind.PLAN_FINISHED:
                    elapsed = time.monotonic() - started
                    result = event.reason
                    break
    finally:
        await target.cleanup()
    levels = len(counts)
    critical = levels * STEP_SECONDS
    bound = critical + len(graph) / PARALLEL * STEP_SECONDS + 1.0
    best = sum(math.ceil(count / PARALLEL) for count in counts) * STEP_SECONDS
    per_move = [times[-1] - times[0] - STEP_SECONDS for times in moves.values() if len(times) > 1]
    verdict = "ok" if elapsed <= bound else "TOO SLOW"
    print(f"evacuating {len(graph)} services ({' + '.join(map(str, counts))} in {levels} levels), runbooks of "
          f"{STEP_SECONDS:g}s, parallel {PARALLEL}: {elapsed:.2f}s ({result}); bound: critical path "
          f"{critical:.0f}s + {len(graph)}/{PARALLEL} + 1 = {bound:.0f}s: {verdict}; groups at best "
          f"{best:.0f}s, plan overhead {elapsed - best:.2f}s ({(elapsed - best) / len(graph) * 1000:.0f} ms per "
          f"service); per move beyond its 1 s step: median {statistics.median(per_move) * 1000:.0f} ms, max "
          f"{max(per_move) * 1000:.0f} ms", flush=True)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 60-service evacuation")
    args = parser.parse_args()
    bcd_logging.setup("warning")
    with tempfile.TemporaryDirectory(prefix="bcd-bench-plans-") as tmp:
        (Path(tmp) / "planning").mkdir()
        (Path(tmp) / "evacuation").mkdir()
        bench_planning(Path(tmp) / "planning")
        counts = [10, 20, 30] if args.quick else [20, 40, 60, 80]
        asyncio.run(bench_evacuation(Path(tmp) / "evacuation", counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
