"""Recovery plans (`make bench`): how long planning a 500-service estate takes (groups, skips, critical path,
the dry run's text), and a 200-service evacuation whose runbooks each take 1 s with `parallel: 10`: its total
against its bound (critical path + services / parallel), its overhead over the runbooks' own time in groups
of `parallel`, each move's overhead over its runbook (median, p99) and the CPU it took, on the real Engine,
Runner, plan runner and a SQLite journal in a temporary directory (in process: no HTTP, no probes; the
standbys are fed in as up)."""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path

import structlog

from bcd.bus import Bus
from bcd.config import Config, parse
from bcd.engine import Engine
from bcd.events import EventKind
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.operations import Accepted, Operations, RunPlan
from bcd.plans import planner
from bcd.plans.model import PlanRun
from bcd.plans.runner import PlanRunner
from bcd.runbooks.runner import Runner
from bcd.view import EngineView

RUNBOOK = 1.0  # seconds: each runbook is one sleep step this long
PROBE = "[{name: t, tcp: {host: 127.0.0.1, port: 1}}]"


def estate(counts: list[int], step: str, parallel: int, state: str) -> Config:
    """Services in len(counts) dependency levels, each needing two of the level below, all active on dorset."""
    lines = [f"state_dir: {state}", "sites: {dorset: {}, hampshire: {}}",
             "defaults: {interval: 10s, timeout: 3s, rise: 1, fall: 1}", "runner: {max_concurrent_runs: 100}",
             f"runbooks: {{move: {{steps: [{{name: s, sleep: {{duration: {step}}}}}]}}}}", "services:"]
    below: list[str] = []
    for level, count in enumerate(counts, start=1):
        names = [f"l{level}s{index}" for index in range(count)]
        for index, name in enumerate(names):
            needs = sorted({below[index % len(below)], below[(index + 1) % len(below)]}) if below else []
            lines.append(f"  {name}: {{active: dorset, depends_on: [{', '.join(needs)}], failover: {{runbook: move, "
                         f"cooldown: 0s}}, sites: {{dorset: {{probes: {PROBE}}}, hampshire: {{probes: {PROBE}}}}}}}")
        below = names
    lines.append(f"plans:\n  evacuate: {{from: dorset, to: hampshire, parallel: {parallel}}}")
    return parse("\n".join(lines) + "\n")


def planning(counts: list[int]) -> None:
    config = estate(counts, "1s", 10, tempfile.mkdtemp())
    plan = config.plans["evacuate"]
    active = {name: service.active for name, service in config.services.items()}
    seconds = dict.fromkeys(config.services, 1.0)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        planned = planner.plan(plan, config.services, active, seconds)
        planner.describe("evacuate", plan, planned, seconds)
        times.append(time.perf_counter() - started)
    print(f"planning {len(config.services)} services in {len(planned.groups)} groups (groups, skips, critical "
          f"path, dry-run text): best {min(times) * 1000:.1f} ms, median {sorted(times)[10] * 1000:.1f} ms "
          "(target < 50 ms)")


async def evacuation(counts: list[int], parallel: int) -> None:
    with tempfile.TemporaryDirectory() as state:
        config = estate(counts, f"{RUNBOOK:g}s", parallel, state)
        engine = Engine(config, Journal(Path(state) / "bcd.sqlite"), Bus(), runner=lambda runs, hooks: Runner(
            runs, hooks, lambda: None, max_concurrent=1000))  # type: ignore[arg-type, return-value]
        engine.act()
        runner = engine.runner
        assert runner is not None
        for name in config.services:
            for site in ("dorset", "hampshire"):
                engine.observe(Observation(ProbeKey(name, site, "t"), Result.OK, 0.01, "ok", time.time()))
        plans = PlanRunner(engine.journal, Operations(engine), EngineView(engine), engine.emit)
        operations = Operations(engine, plans=plans)
        plans.start()
        try:
            async with engine.bus.subscription("bench", 100_000) as events:
                started, cpu = time.perf_counter(), time.process_time()
                outcome = await operations.perform(RunPlan("evacuate", "bench", "bench"))
                assert isinstance(outcome, Accepted) and outcome.plan_run is not None, outcome
                while (await events.get()).kind is not EventKind.PLAN_FINISHED:
                    pass
                took, cpu = time.perf_counter() - started, time.process_time() - cpu
            run = plans.journal.get(outcome.plan_run.id)
        finally:
            await plans.stop()
            await runner.stop()
        assert run is not None and run.state == "succeeded", run
        report(config, run, parallel, took=took, cpu=cpu)


def report(config: Config, run: PlanRun, parallel: int, *, took: float, cpu: float) -> None:
    """The evacuation's figures: its total against the bound, and the overhead over its runbooks' own time."""
    groups, moves = run.groups, [move for move in run.moves if move.group > 0]
    active = {name: service.active for name, service in config.services.items()}
    critical = planner.plan(config.plans["evacuate"], config.services, active,
                            dict.fromkeys(config.services, RUNBOOK)).critical.seconds
    spread = len(moves) / parallel * RUNBOOK
    bound = critical + spread
    waves = sum(math.ceil(len(group) / parallel) for group in groups) * RUNBOOK  # the runbooks' time, by groups
    per_move = sorted((move.ended or 0.0) - (move.started or 0.0) - RUNBOOK for move in moves)
    print(f"evacuation of {len(moves)} services, runbooks {RUNBOOK:g} s, parallel {parallel}, {len(groups)} groups: "
          f"total {took:.2f} s; bound {bound:g} s (critical path {critical:g} s + services / parallel {spread:g} s; "
          f"the issue allows it + 1 s); the runbooks' own time in groups of {parallel} {waves:g} s; "
          f"overhead {took - waves:.2f} s (target < 0.5 s); a move's overhead over its runbook median "
          f"{per_move[len(per_move) // 2] * 1000:.1f} ms, p99 {per_move[int(len(per_move) * 0.99)] * 1000:.1f} ms; "
          f"CPU {cpu:.2f} s ({cpu / len(moves) * 1000:.1f} ms a move)")


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))  # errors only: no line per run
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small estate")
    quick = parser.parse_args().quick
    planning([50, 100, 150, 200] if not quick else [10, 20, 30, 40])
    asyncio.run(evacuation([20, 40, 60, 80] if not quick else [5, 10, 10, 15], 10))


if __name__ == "__main__":
    sys.exit(main())
