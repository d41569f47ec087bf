"""The plan runner against a real Engine, Runner and journal (SQLite): order by dependency, `parallel`,
failures with continue and stop, manual services, gates, abort, and refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.events import Event, EventKind, SiteLost
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.operations import (
    AbortPlan,
    Accepted,
    Acknowledge,
    ApproveGate,
    Operations,
    PlanDone,
    Refusal,
    Refused,
    ResumePlan,
    RunPlan,
)
from bcd.plans.model import MoveState, PlanRun, PlanState
from bcd.plans.runner import PlanRunner
from bcd.runbooks.runner import Runner
from bcd.view import EngineView
from tests.helpers.plans import levels, most_at_once, order_violations, services_yaml
from tests.helpers.runner_kit import acting

PROBES = {"dorset": "[{name: t, tcp: {host: 127.0.0.1, port: 1}}]",
          "hampshire": "[{name: t, tcp: {host: 127.0.0.1, port: 1}}]"}
RUNBOOKS = """
runbooks:
  move: {steps: [{name: work, sleep: {duration: 50ms}}]}
  broken: {steps: [{name: fail, command: {argv: [/bin/false]}}]}
  hold: {steps: [{name: wait, sleep: {duration: 1h}}]}
"""


@dataclass
class Estate:
    engine: Engine
    runner: Runner
    operations: Operations
    plans: PlanRunner
    graph: dict[str, list[str]]
    seen: list[Event]

    async def run(self, **options: object) -> PlanRun:
        outcome = await self.operations.perform(RunPlan("evacuate", "olive", "drill", **options))  # type: ignore[arg-type]
        assert isinstance(outcome, Accepted) and outcome.plan_run is not None, outcome
        return outcome.plan_run

    async def ended(self, run_id: int, timeout: float = 20.0) -> PlanRun:
        """The plan run once it has ended and its end was announced."""
        return await self.until(run_id, lambda run: run.ended is not None and any(
            e.kind is EventKind.PLAN_FINISHED and e.data.plan_run == run_id for e in self.seen), timeout)  # type: ignore[union-attr]

    async def until(self, run_id: int, check: Callable[[PlanRun], bool], timeout: float = 20.0) -> PlanRun:
        """The plan run once `check` holds; on timeout, an AssertionError saying what was last journaled and
        seen (a slow or flaky run explains itself)."""
        run = None
        try:
            async with self.engine.bus.subscription("test") as events, asyncio.timeout(timeout):
                while True:
                    run = self.plans.journal.get(run_id)
                    if run is not None and check(run):
                        return run
                    self.seen.append(await events.get())
        except TimeoutError:
            raise AssertionError(f"plan run {run_id}: not as awaited within {timeout:g}s; journaled: {run}; "
                                 f"seen: {[(e.kind, e.reason) for e in self.seen]}; runs: "
                                 f"{self.engine.runs.recent(limit=10)}") from None

    def order(self) -> tuple[list[str], int]:
        runs = {record.service: record for record in self.engine.runs.recent(limit=500)}
        first = {name: self.engine.runs.steps(record.id)[0].started for name, record in runs.items()}
        intervals = [(record.started, record.ended or 0.0) for record in runs.values()]
        return order_violations(self.graph, runs, first), most_at_once(intervals)


async def build(tmp_path: Path, graph: dict[str, list[str]], plan: str, **services: object) -> Estate:
    text = (f"state_dir: {tmp_path}\nsites: {{dorset: {{}}, hampshire: {{}}}}\n"
            "defaults: {interval: 10s, timeout: 3s, rise: 1, fall: 1}\n"
            f"runner: {{max_concurrent_runs: 50}}\n{RUNBOOKS}{services_yaml(graph, PROBES, **services)}"  # type: ignore[arg-type]
            f"plans:\n  evacuate: {plan}\n")
    engine, runner = acting(parse(text), Journal(tmp_path / "bcd.sqlite"), Bus())
    for name in graph:
        for site in ("dorset", "hampshire"):
            engine.observe(Observation(ProbeKey(name, site, "t"), Result.OK, 0.01, "ok", 100.0))
    plans = PlanRunner(engine.journal, Operations(engine), EngineView(engine), engine.emit)
    operations = Operations(engine, plans=plans)
    plans.start()
    return Estate(engine, runner, operations, plans, graph, [])


@pytest.fixture
async def stop() -> AsyncIterator[list[Estate]]:
    built: list[Estate] = []
    yield built
    for estate in built:
        await estate.plans.stop()
        await estate.runner.stop()


async def test_groups_move_in_dependency_order_never_more_than_parallel(tmp_path: Path, stop: list[Estate]) -> None:
    graph = levels([3, 4, 6, 7])
    estate = await build(tmp_path, graph, "{from: dorset, to: hampshire, parallel: 3}")
    stop.append(estate)
    run = await estate.ended((await estate.run()).id)
    assert run.state is PlanState.SUCCEEDED, run
    assert {move.state for move in run.moves} == {MoveState.MOVED}
    assert len(run.groups) == 4
    violations, most = estate.order()
    assert violations == []
    assert most == 3
    assert {view.active for view in estate.engine.services.values()} == {"hampshire"}
    records = estate.engine.runs.recent(limit=100)
    assert {(r.trigger, r.to_site) for r in records} == {("plan", "hampshire")}
    assert all(r.reason.startswith(f"olive: plan evacuate run {run.id}: drill") for r in records)
    groups = [e.data.group for e in estate.seen if e.kind is EventKind.PLAN_GROUP_STARTED]  # type: ignore[union-attr]
    assert groups == [1, 2, 3, 4]
    assert [e.kind for e in estate.seen if e.kind.startswith("plan_")][-1] is EventKind.PLAN_FINISHED


async def test_a_failed_service_with_continue_skips_its_dependents_only(tmp_path: Path, stop: list[Estate]) -> None:
    graph = {"a": [], "b": [], "a1": ["a"], "a2": ["a1"], "b1": ["b"]}
    estate = await build(tmp_path, graph, "{from: dorset, to: hampshire}", runbooks={"a": "broken"})
    stop.append(estate)
    run = await estate.ended((await estate.run()).id)
    states = {move.service: (move.state, move.reason) for move in run.moves}
    assert states["a"][0] is MoveState.FAILED and states["a"][1].startswith("run ")
    assert states["a1"] == (MoveState.SKIPPED, f"dependency a failed ({states['a'][1]})")
    assert states["a2"][0] is MoveState.SKIPPED and states["a2"][1].startswith("dependency a1 skipped")
    assert states["b"][0] is states["b1"][0] is MoveState.MOVED
    assert run.state is PlanState.FAILED and run.detail == "failed: a"


async def test_a_failed_service_with_stop_starts_nothing_else(tmp_path: Path, stop: list[Estate]) -> None:
    graph = {"a": [], "b": [], "a1": ["a"], "b1": ["b"]}
    estate = await build(tmp_path, graph, "{from: dorset, to: hampshire, parallel: 1, on_service_failure: stop}",
                         runbooks={"a": "broken"})
    stop.append(estate)
    run = await estate.ended((await estate.run()).id)
    states = {move.service: move.state for move in run.moves}
    assert states == {"a": MoveState.FAILED, "b": MoveState.PENDING, "a1": MoveState.PENDING,
                      "b1": MoveState.PENDING}
    assert run.detail == "a failed and the plan stops on failure"
    assert [r.service for r in estate.engine.runs.recent()] == ["a"]


async def test_manual_services_and_gates_wait_for_an_operator(tmp_path: Path, stop: list[Estate]) -> None:
    graph = {"a": [], "manual": [], "c": ["a", "manual"]}
    estate = await build(tmp_path, graph, "{from: dorset, to: hampshire, gates: [{after_group: 1}]}",
                         runbooks={"manual": ""})
    stop.append(estate)
    run = await estate.run()
    await estate.until(run.id, lambda r: r.move("a").state is MoveState.MOVED)  # type: ignore[union-attr]
    refused = await estate.operations.perform(ApproveGate(run.id, "olive"))
    assert refused == Refused(Refusal.CONFLICT, f"plan run {run.id} is not waiting at a gate")
    done = await estate.operations.perform(PlanDone(run.id, "manual", "olive"))
    assert isinstance(done, Accepted), done
    waiting = await estate.until(run.id, lambda r: r.state is PlanState.WAITING_GATE)
    assert waiting.move("manual").state is MoveState.DONE  # type: ignore[union-attr]
    assert estate.engine.runs.recent() and all(r.service != "c" for r in estate.engine.runs.recent())
    assert isinstance(await estate.operations.perform(ApproveGate(run.id, "peter")), Accepted)
    run = await estate.ended(run.id)
    assert run.state is PlanState.SUCCEEDED
    assert [(g.after_group, g.state, g.by) for g in run.gates] == [(1, "approved", "peter")]


async def test_one_run_of_a_plan_at_a_time_and_abort(tmp_path: Path, stop: list[Estate]) -> None:
    estate = await build(tmp_path, {"a": [], "b": ["a"]}, "{from: dorset, to: hampshire}", runbook="hold")
    stop.append(estate)
    run = await estate.run()
    second = await estate.operations.perform(RunPlan("evacuate", "peter", "again"))
    assert second == Refused(Refusal.CONFLICT, f"one run of a plan at a time: plan run {run.id} of evacuate is "
                                               "running")
    await estate.until(run.id, lambda r: r.move("a").run_id is not None)  # type: ignore[union-attr]
    aborted = await estate.operations.perform(AbortPlan(run.id, "olive", now=True))
    assert isinstance(aborted, Accepted) and aborted.detail.endswith("aborted a"), aborted
    run = await estate.ended(run.id)
    assert run.state is PlanState.ABORTED
    assert {m.service: m.state for m in run.moves} == {"a": MoveState.FAILED, "b": MoveState.PENDING}
    assert isinstance(await estate.operations.perform(RunPlan("evacuate", "peter", "again")), Accepted)


async def test_refusals_name_what_is_unknown(tmp_path: Path, stop: list[Estate]) -> None:
    estate = await build(tmp_path, {"a": []}, "{from: dorset, to: hampshire}")
    stop.append(estate)
    assert await estate.operations.perform(RunPlan("nosuch", "olive", "x")) == Refused(
        Refusal.NOT_FOUND, "no plan named 'nosuch'")
    for intent in (ResumePlan(99, "olive"), AbortPlan(99, "olive"), PlanDone(99, "a", "olive"),
                   ApproveGate(99, "olive")):
        assert await estate.operations.perform(intent) == Refused(Refusal.NOT_FOUND, "no plan run 99")
    dry = await estate.operations.perform(RunPlan("evacuate", "olive", "x", dry_run=True))
    assert isinstance(dry, Accepted) and dry.plan_run is None and dry.detail.startswith("plan evacuate: dorset")
    assert estate.plans.journal.recent() == []
    run = await estate.ended((await estate.run()).id)
    assert await estate.operations.perform(ResumePlan(run.id, "olive")) == Refused(
        Refusal.CONFLICT, f"plan run {run.id} is succeeded, not interrupted")


async def test_a_lost_site_starts_its_auto_plans_only(tmp_path: Path, stop: list[Estate]) -> None:
    estate = await build(tmp_path, {"a": []}, "{from: dorset, to: hampshire, trigger: auto}")
    stop.append(estate)
    estate.engine.emit(Event(EventKind.SITE_LOST, 100.0, None, "hampshire", "all down", SiteLost(("a",))))
    estate.engine.emit(Event(EventKind.SITE_LOST, 100.0, None, "dorset", "all down", SiteLost(("a",), ("evacuate",))))
    run = await estate.until(1, lambda run: run.ended is not None)
    assert (run.plan, run.by, run.reason, run.state) == ("evacuate", "auto", "site dorset lost: all down",
                                                         PlanState.SUCCEEDED)
    assert [r.id for r in estate.plans.journal.recent()] == [1]


async def test_a_gate_nobody_approves_fails_the_plan_run(tmp_path: Path, stop: list[Estate]) -> None:
    estate = await build(tmp_path, {"a": [], "b": ["a"]},
                         "{from: dorset, to: hampshire, gates: [{after_group: 1, approval: {timeout: 200ms}}]}")
    stop.append(estate)
    run = await estate.ended((await estate.run()).id)
    assert (run.state, run.detail) == (PlanState.FAILED, "the gate after group 1 was not approved within 0.2s")
    assert [(g.state, g.by) for g in run.gates] == [("timed_out", None)]
    assert {m.service: m.state for m in run.moves} == {"a": MoveState.MOVED, "b": MoveState.PENDING}
    waiting = [e for e in estate.seen if e.kind is EventKind.PLAN_GATE_WAITING]
    assert len(waiting) == 1 and waiting[0].reason == f"plan run {run.id} waits for approval before group 2"


async def test_abort_lets_the_moves_in_progress_finish_and_starts_no_more(tmp_path: Path,
                                                                           stop: list[Estate]) -> None:
    estate = await build(tmp_path, {"a": [], "b": ["a"]}, "{from: dorset, to: hampshire}")
    stop.append(estate)
    run = await estate.run()
    await estate.until(run.id, lambda r: r.move("a").state is MoveState.MOVING)  # type: ignore[union-attr]
    aborted = await estate.operations.perform(AbortPlan(run.id, "olive"))
    assert isinstance(aborted, Accepted) and aborted.detail == f"plan run {run.id}: no more moves start"
    run = await estate.ended(run.id)
    assert (run.state, run.detail) == (PlanState.ABORTED, "aborted by olive")
    assert {m.service: m.state for m in run.moves} == {"a": MoveState.MOVED, "b": MoveState.PENDING}
    assert await estate.operations.perform(AbortPlan(run.id, "olive")) == Refused(
        Refusal.CONFLICT, f"plan run {run.id} is aborted: nothing to abort")


async def test_resume_after_a_stop_settles_the_cut_short_move_first(tmp_path: Path, stop: list[Estate]) -> None:
    estate = await build(tmp_path, {"a": [], "b": ["a"], "c": []}, "{from: dorset, to: hampshire, parallel: 1}",
                         runbooks={"a": "hold"})
    stop.append(estate)
    run = await estate.run()
    await estate.until(run.id, lambda r: r.move("a").run_id is not None)  # type: ignore[union-attr]
    await estate.plans.stop()  # the daemon stops: the plan run is interrupted, then its move
    await estate.runner.stop()
    interrupted = estate.plans.journal.get(run.id)
    assert interrupted is not None and interrupted.state is PlanState.INTERRUPTED
    assert {m.service: m.state for m in interrupted.moves} == {
        "a": MoveState.MOVING, "b": MoveState.PENDING, "c": MoveState.PENDING}
    plans = PlanRunner(estate.engine.journal, estate.operations, EngineView(estate.engine), estate.engine.emit)
    plans.start()
    estate.plans = plans
    refused = await estate.operations.perform(ResumePlan(run.id, "olive"))
    assert isinstance(refused, Refused) and refused.reason.startswith("blocked: a (run ") and refused.reason.endswith(
        f"was cut short: bcd ack a, or bcd plan done {run.id} a)"), refused
    acknowledged = await estate.operations.perform(Acknowledge("a", "olive"))
    assert isinstance(acknowledged, Accepted)
    assert isinstance(await estate.operations.perform(ResumePlan(run.id, "olive")), Accepted)
    run = await estate.ended(run.id)
    states = {m.service: (m.state, m.reason) for m in run.moves}
    assert states["a"][0] is MoveState.FAILED and states["a"][1].endswith("interrupted, acknowledged by olive")
    assert states["b"][0] is MoveState.SKIPPED and states["c"][0] is MoveState.MOVED
    assert [r.service for r in estate.engine.runs.recent()].count("a") == 1  # a's run never started again


async def test_a_move_learns_of_its_runs_end_from_the_runner_not_the_bus(tmp_path: Path, stop: list[Estate]) -> None:
    # without the plan runner's listener on the bus, a move would see its run's end only at the journal check
    # it makes every second; from the runner it sees it at once
    estate = await build(tmp_path, {"a": [], "b": ["a"], "c": ["b"]}, "{from: dorset, to: hampshire}")
    stop.append(estate)
    listener = estate.plans._listener
    assert listener is not None
    listener.cancel()
    run = await estate.ended((await estate.run()).id)
    assert run.state is PlanState.SUCCEEDED, run
    moves = {m.service: m for m in run.moves}
    runs = {m.service: estate.engine.runs.get(m.run_id) for m in run.moves if m.run_id is not None}
    assert all(record is not None and record.ended is not None for record in runs.values())
    late = {name: moves[name].ended - record.ended for name, record in runs.items()}  # type: ignore[operator, union-attr]
    assert all(0 <= seconds < 0.5 for seconds in late.values()), late
