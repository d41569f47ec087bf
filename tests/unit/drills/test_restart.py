"""What the daemon says about a drill it stopped during (bcd.drills.restart), for the cases the daemon-level tests
(tests/integration/test_drill_restart.py) do not reach: a leg cut short, a drill that started away from home,
a cleanup the stopped run had begun, the drill's runs picked out among others, a drill whose start the journal
lost (a real SQLite journal)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from bcd.drills.records import DrillJournal
from bcd.drills.restart import cleaned, cleanup_run, runs_of, where_left
from bcd.events import DrillStarted, Event, EventKind
from bcd.journal import Journal, RunJournal
from bcd.journal.run_records import RunRecord


def run(id: int, result: str, **evidence: Any) -> RunRecord:
    return RunRecord(id, "payroll", "move", "failover", "drill", "drill", "dorset", "hampshire", False, False,
                     evidence, 1000.0, None if result == "running" else 1010.0, result, "", None, None, None)


def test_the_runs_of_a_drill_and_its_cleanup_run_are_picked_out() -> None:
    recent = [run(5, "succeeded", drill="d1", drill_cleanup=True), run(4, "failed"), run(3, "interrupted", drill="d1"),
              run(2, "succeeded", drill="d0")]
    mine = runs_of(recent, "d1")
    assert [r.id for r in mine] == [3, 5]
    found = cleanup_run(mine)
    assert found is not None and found.id == 5
    assert cleanup_run(mine[:1]) is None


def test_where_a_round_trip_left_the_service() -> None:
    assert where_left("payroll", "dorset", "dorset", "dorset", [run(1, "succeeded"), run(2, "succeeded")]) == (
        "payroll is active on dorset, where the drill started")
    assert where_left("payroll", "dorset", "dorset", "dorset", [run(1, "running")]) == (
        "payroll is active on dorset, where the drill started; run 1 was cut short: check payroll at both sites")
    assert where_left("payroll", "hampshire", "dorset", "dorset", [run(1, "succeeded"), run(2, "interrupted")]) == (
        "payroll was left active on dorset (the drill started on hampshire); run 2 was cut short: check payroll at "
        "both sites; nothing was moved back automatically: to restore it, bcd failover payroll --to hampshire "
        "--reason '…'")  # it started away from home: moving back there is a failover


def test_how_a_cleanup_after_a_restart_went() -> None:
    assert cleaned(run(7, "succeeded"), again=True) == (
        "its cleanup ran after the restart (run 7; all its steps, though the stopped run had begun them) and "
        "completed")
    assert cleaned(run(7, "failed")) == "its cleanup ran after the restart (run 7) and failed: finish it by hand " \
                                        "(run 7's steps)"
    assert cleaned(run(7, "succeeded"), earlier=True) == "its cleanup ran after an earlier restart (run 7) and completed"


def test_a_drill_whose_start_the_journal_lost_is_found_by_its_interrupted_first_run(tmp_path: Path) -> None:
    """Killed within a group commit of the drill's start: its `drill_started` event never reached the journal,
    its first run (on disk before its first step) did; the next start recovers the drill from that run."""
    journal = Journal(tmp_path / "bcd.sqlite")
    records, runs = DrillJournal(journal), RunJournal(journal)
    for drill, origin, target in (("lost-runbook", "dorset", "dorset"), ("lost-trip", "dorset", "hampshire"),
                                  ("announced", "dorset", "dorset")):
        first = runs.create(replace(run(0, "running", drill=drill), from_site=origin, to_site=target,
                                    reason=f"alice: drill {drill}: test"))
        runs.mark_interrupted(first, 1020.0)
    back = runs.create(replace(run(0, "running", drill="lost-trip"), from_site="hampshire", to_site="dorset"))
    runs.mark_interrupted(back, 1030.0)  # the second leg: the drill started on dorset all the same
    runs.create(run(0, "succeeded", drill="finished"))  # a drill not interrupted
    journal.append(Event(EventKind.DRILL_STARTED, 1000.0, "payroll", "dorset", "drill announced by alice: test",
                         DrillStarted("announced", "runbook", 0.0, "alice", "dorset", "dorset")))
    assert sorted((service, data["drill"], data["drill_kind"], data["by"], data["from"], data["to"])
                  for service, _, data in records.unannounced()) == [
        ("payroll", "lost-runbook", "runbook", "alice", "dorset", "dorset"),
        ("payroll", "lost-trip", "round_trip", "alice", "dorset", "hampshire")]
    journal.close()
