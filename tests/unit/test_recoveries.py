"""A recovery's timeline and phases, derived from a run's journal rows (table), and read from a real journal."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bcd.events import Event, EventKind, SiteTransition
from bcd.journal import Journal, RunJournal, RunRecord, StepRecord
from bcd.model import RunKind, RunResult
from bcd.recoveries import RecoveryJournal, RecoveryKind, derive


def run(result: RunResult = RunResult.SUCCEEDED, *, detected: float | None = 100.0, started: float = 130.0,
        verified: float | None = 170.0, kind: RunKind = RunKind.FAILOVER, evidence: dict[str, Any] | None = None,
        run_id: int = 1) -> RunRecord:
    return RunRecord(run_id, "payroll", "move", kind, "auto", "dorset is down", "dorset", "hampshire", False, False,
                     evidence or {}, started, None if result is RunResult.RUNNING else 180.0, result, "", None,
                     detected, verified)


def step(seq: int, started: float, ended: float | None, kind: str = "command") -> StepRecord:
    return StepRecord(1, seq, "main", f"step{seq}", kind, {}, started, ended, 1, "ok" if ended else "running", "")


@dataclass(frozen=True)
class Case:
    name: str
    run: RunRecord
    steps: list[StepRecord]
    down_at: list[float]
    rto: float | None
    phases: dict[str, float | None]
    total: float | None
    rto_met: bool | None


STEPS = [step(1, 130.0, 140.0), step(2, 140.0, 150.0), step(3, 150.0, 170.0, "wait_healthy")]
CASES = [
    Case("automatic: failing, confirmed down, run, verified by a wait_healthy step", run(), STEPS, [125.0], 300.0,
         {"detection": 25.0, "decision": 5.0, "execution": 20.0, "verification": 20.0}, 70.0, True),
    Case("tiny rto: missed", run(), STEPS, [125.0], 60.0,
         {"detection": 25.0, "decision": 5.0, "execution": 20.0, "verification": 20.0}, 70.0, False),
    Case("no confirming transition: decided at the run's start", run(), STEPS, [], 300.0,
         {"detection": 30.0, "decision": 0.0, "execution": 20.0, "verification": 20.0}, 70.0, True),
    Case("a transition before the first failure is not this failure's", run(), STEPS, [90.0, 126.0, 131.0], None,
         {"detection": 26.0, "decision": 4.0, "execution": 20.0, "verification": 20.0}, 70.0, None),
    Case("planned failback: no failure, measured from the decision", run(detected=None, kind=RunKind.FAILBACK),
         STEPS, [], 30.0, {"detection": None, "decision": 0.0, "execution": 20.0, "verification": 20.0}, 40.0, False),
    Case("verified at the run's end, after every step", run(verified=175.0), STEPS[:2], [125.0], 300.0,
         {"detection": 25.0, "decision": 5.0, "execution": 20.0, "verification": 25.0}, 75.0, True),
    Case("failed: not verified, no total", run(RunResult.FAILED, verified=None), STEPS, [125.0], 300.0,
         {"detection": 25.0, "decision": 5.0, "execution": 40.0, "verification": None}, None, None),
    Case("a failed run's verified_at is not a recovery", run(RunResult.ROLLED_BACK), STEPS, [125.0], 300.0,
         {"detection": 25.0, "decision": 5.0, "execution": 40.0, "verification": None}, None, None),
    Case("running: execution not over", run(RunResult.RUNNING, verified=None), [step(1, 130.0, None)], [125.0],
         300.0, {"detection": 25.0, "decision": 5.0, "execution": None, "verification": None}, None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_timeline(case: Case) -> None:
    recovery = derive(case.run, case.steps, case.down_at, case.rto)
    phases = recovery.timeline.phases()
    assert phases == case.phases
    assert recovery.timeline.total == case.total
    assert recovery.rto_met is case.rto_met
    if case.total is not None:  # the phases add up to the total
        assert sum(value or 0.0 for value in phases.values()) == pytest.approx(case.total)


def test_kind_and_plan_come_from_the_evidence() -> None:
    assert derive(run(), [], [], None).kind is RecoveryKind.FAILOVER
    assert derive(run(kind=RunKind.FAILBACK), [], [], None).kind is RecoveryKind.FAILBACK
    drill = derive(run(evidence={"drill": "payroll-quarterly", "plan": "lose-dorset"}), [], [], None)
    assert drill.kind is RecoveryKind.DRILL and drill.plan == "lose-dorset"
    assert drill.to_json()["kind"] == "drill"


def test_read_from_a_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.db")
    runs = RunJournal(journal)
    journal.append(Event(EventKind.SITE_TRANSITION, 110.0, "payroll", "dorset", "3 failures",
                         SiteTransition("up", "degraded")))
    journal.append(Event(EventKind.SITE_TRANSITION, 125.0, "payroll", "dorset", "5 failures",
                         SiteTransition("degraded", "down")))
    journal.append(Event(EventKind.SITE_TRANSITION, 126.0, "payroll", "hampshire", "other site",
                         SiteTransition("up", "down")))
    run_id = runs.create(run(RunResult.RUNNING, verified=None))
    for record in STEPS:
        runs.step_started(StepRecord(run_id, record.seq, "main", record.name, record.kind, {}, record.started, None,
                                     0, "running", ""))
        assert record.ended is not None
        runs.step_finished(run_id, record.seq, ended=record.ended, attempts=1, outcome="ok", output="")
    dry = runs.create(RunRecord(0, "payroll", "move", RunKind.FAILOVER, "auto", "dry", "dorset", "hampshire", True,
                                False, {}, 200.0, 201.0, RunResult.SUCCEEDED, "", None, None, None))
    recoveries = RecoveryJournal(journal, runs)
    (running,) = recoveries.recent("payroll", 60.0)
    assert not running.finished and running.rto_met is None
    runs.finish(run_id, RunResult.SUCCEEDED, 180.0, "done", verified_at=170.0)
    (recovery,) = recoveries.recent("payroll", 60.0)  # the dry run is no recovery
    assert recovery.timeline.decided == 125.0 and recovery.timeline.executed == 150.0
    assert recovery.timeline.total == 70.0 and recovery.rto_met is False
    assert [r.run_id for r in recoveries.since(0, lambda name: 60.0)] == [run_id]
    assert recoveries.since(run_id, lambda name: None) == [] and dry > run_id
    journal.close()
