"""Plan drills (bcd.drills.plan) against a real engine, runner, plan runner and journal (SQLite): the plan's
moves in dependency order, each a leg of the drill (no cooldown), then the moves back with dependents first; a
failed move stops the drill and moves back what moved; a precondition failing refuses it before anything moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bcd.authority import Actor, Role, Selector
from bcd.bus import Bus
from bcd.config import parse
from bcd.drills.runner import Drills
from bcd.engine import Engine
from bcd.events import Event, EventKind
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result, RunKind
from bcd.operations import Accepted, DrillPlan, Operations, Refusal, Refused
from bcd.plans.runner import PlanRunner
from bcd.runbooks.runner import Runner
from bcd.view import EngineView
from tests.helpers.runner_kit import acting

GRAPH = {"db": [], "app": ["db"], "web": ["app"]}


def config(tmp_path: Path, broken: str = "") -> str:
    services = "\n".join(
        f"  {name}: {{active: dorset, depends_on: [{', '.join(needs)}], "
        f"failover: {{runbook: {'broken' if name == broken else 'move'}, mode: manual, cooldown: 1h}}, "
        "failback: {runbook: move, mode: manual}, "
        "sites: {dorset: {probes: [{name: t, tcp: {host: 127.0.0.1, port: 1}}]}, "
        "hampshire: {probes: [{name: t, tcp: {host: 127.0.0.1, port: 1}}]}}}"
        for name, needs in GRAPH.items())
    return (f"state_dir: {tmp_path}\nsites: {{dorset: {{}}, hampshire: {{}}}}\n"
            "defaults: {interval: 10s, timeout: 3s, rise: 1, fall: 1}\n"
            "runbooks:\n  move: {steps: [{name: work, sleep: {duration: 10ms}}]}\n"
            "  broken: {steps: [{name: fail, command: {argv: [/bin/false]}}]}\n"
            f"services:\n{services}\nplans:\n  evacuate: {{from: dorset, to: hampshire}}\n")


@dataclass
class Estate:
    engine: Engine
    runner: Runner
    operations: Operations
    plans: PlanRunner
    drills: Drills

    def observe(self, service: str, site: str, result: Result) -> None:
        self.engine.observe(Observation(ProbeKey(service, site, "t"), result, 0.01, str(result), 100.0))

    async def drilled(self, hold: float = 0.0, meanwhile: Callable[[Event], None] = lambda _: None) -> Event:
        """Start a drill of plan evacuate and wait for its end, handing each event before it to `meanwhile`."""
        async with self.engine.bus.subscription("test") as events, asyncio.timeout(20):
            outcome = await self.operations.perform(DrillPlan("evacuate", "olive", "quarterly rehearsal", hold))
            assert isinstance(outcome, Accepted), outcome
            while (event := await events.get()).kind is not EventKind.DRILL_FINISHED:
                meanwhile(event)
        self.engine.writer.flush()
        return event

    def legs(self) -> list[tuple[str, RunKind, str, str | None]]:
        """Every run, oldest first: (service, kind, to, its drill)."""
        runs = sorted(self.engine.runs.recent(limit=100), key=lambda r: r.id)
        return [(r.service, r.kind, r.to_site, r.evidence.get("drill")) for r in runs]


@pytest.fixture
async def build(tmp_path: Path) -> AsyncIterator[Callable[..., Estate]]:
    built: list[Estate] = []

    def make(broken: str = "") -> Estate:
        engine, runner = acting(parse(config(tmp_path, broken)), Journal(tmp_path / "bcd.sqlite"), Bus())
        view = EngineView(engine)
        plans = PlanRunner(engine.journal, Operations(engine), view, engine.emit)
        drills = Drills(Operations(engine), view, engine.emit, poll=0.01)
        estate = Estate(engine, runner, Operations(engine, plans=plans, drills=drills), plans, drills)
        for name in GRAPH:
            for site in ("dorset", "hampshire"):
                estate.observe(name, site, Result.OK)
        plans.start()
        built.append(estate)
        return estate

    yield make
    for estate in built:
        await estate.drills.stop()
        await estate.plans.stop()
        await estate.runner.stop()
        estate.engine.journal.close()


async def test_a_plan_drill_moves_in_dependency_order_and_back_dependents_first(build: Callable[..., Estate]) -> None:
    estate = build()
    finished = await estate.drilled()
    assert finished.data.drill_kind == "plan" and finished.data.result == "succeeded", finished.reason  # type: ignore[union-attr]
    drill = finished.data.drill  # type: ignore[union-attr]
    assert drill.startswith("plan:evacuate@")
    assert estate.legs() == [
        ("db", RunKind.FAILOVER, "hampshire", drill), ("app", RunKind.FAILOVER, "hampshire", drill),
        ("web", RunKind.FAILOVER, "hampshire", drill),
        ("web", RunKind.FAILBACK, "dorset", drill), ("app", RunKind.FAILBACK, "dorset", drill),
        ("db", RunKind.FAILBACK, "dorset", drill)]
    assert {view.active for view in estate.engine.services.values()} == {"dorset"}
    assert all(estate.engine.snapshot(name).last_run_ended is None for name in GRAPH)  # no cooldown (1h) started
    assert "3 service(s) served from hampshire for 0s; 3 service(s) back on dorset" in finished.reason
    assert finished.data.runs == tuple(range(1, 7))  # type: ignore[union-attr]


async def test_a_failed_move_stops_the_drill_and_moves_back_what_moved(build: Callable[..., Estate]) -> None:
    estate = build(broken="app")
    finished = await estate.drilled()
    assert finished.data.result == "failed", finished.reason  # type: ignore[union-attr]
    assert "plan run 1 failed: failed: app" in finished.reason
    assert "1 service(s) back on dorset" in finished.reason
    drill = finished.data.drill  # type: ignore[union-attr]
    assert estate.legs() == [("db", RunKind.FAILOVER, "hampshire", drill), ("app", RunKind.FAILOVER, "hampshire", drill),
                             ("db", RunKind.FAILBACK, "dorset", drill)]
    assert {view.active for view in estate.engine.services.values()} == {"dorset"}


async def test_a_site_leaving_up_during_the_hold_aborts_it_and_moves_everything_back(
        build: Callable[..., Estate]) -> None:
    estate = build()

    def degrade(event: Event) -> None:  # once the plan run has ended, the standby of web goes down
        if event.kind is EventKind.PLAN_FINISHED:
            estate.observe("web", "hampshire", Result.FAIL)

    finished = await estate.drilled(hold=600.0, meanwhile=degrade)
    assert finished.data.result == "aborted", finished.reason  # type: ignore[union-attr]
    assert "of plan evacuate aborted: web: target hampshire is down (" in finished.reason, finished.reason
    assert "3 service(s) back on dorset" in finished.reason
    assert [(service, kind) for service, kind, _, _ in estate.legs()[3:]] == [
        ("web", RunKind.FAILBACK), ("app", RunKind.FAILBACK), ("db", RunKind.FAILBACK)]
    assert {view.active for view in estate.engine.services.values()} == {"dorset"}


async def test_a_precondition_failing_on_any_service_refuses_it_before_anything_moves(build: Callable[..., Estate]) -> None:
    estate = build()
    estate.observe("web", "hampshire", Result.FAIL)
    outcome = await estate.operations.perform(DrillPlan("evacuate", "olive", "quarterly rehearsal"))
    assert isinstance(outcome, Refused) and outcome.kind is Refusal.CONFLICT, outcome
    assert outcome.reason.startswith("drill refused: site hampshire of web is down"), outcome.reason
    assert estate.legs() == []
    unknown = await estate.operations.perform(DrillPlan("nowhere", "olive", "x"))
    assert isinstance(unknown, Refused) and unknown.kind is Refusal.NOT_FOUND


async def test_a_plan_drill_is_an_operators_never_a_scoped_tokens(build: Callable[..., Estate]) -> None:
    estate = build()
    scoped = Actor("dana", Role.OPERATOR, Selector(labels={"owner": "dorset-cc"}))
    outcome = await estate.operations.perform(DrillPlan("evacuate", "dana", "x"), scoped)
    assert isinstance(outcome, Refused) and outcome.kind is Refusal.FORBIDDEN, outcome
    assert "a recovery plan acts on services of every owner" in outcome.reason
    viewer = await estate.operations.perform(DrillPlan("evacuate", "vic", "x"), Actor("vic", Role.VIEWER))
    assert isinstance(viewer, Refused) and viewer.kind is Refusal.FORBIDDEN, viewer
    assert estate.legs() == []
