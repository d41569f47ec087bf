"""The status page's recovery plans section: groups of services with state, run and elapsed time, the gate
waiting, the plan's elapsed time against its objective, and every value escaped."""

from __future__ import annotations

from bcd.plans.model import GateRecord, Move, MoveState, PlanRun, PlanState
from bcd.web.plan_page import section

RUN = PlanRun(
    7, "evacuate", "dorset", "hampshire", "olive", "drill", False, 1000.0, PlanState.WAITING_GATE,
    (Move("directory", 1, MoveState.MOVED, "run 3 succeeded", 3, 1000.0, 1030.0),
     Move("<sql>", 2, MoveState.PENDING),
     Move("library", 0, MoveState.SKIPPED, "already there")),
    (GateRecord(1, 600.0, "waiting", None, 1030.0),), objective=120.0,
)


def test_a_plan_run_at_a_gate_shows_groups_gate_and_objective() -> None:
    html = section([RUN.to_json()], True, now=1300.0)
    assert "<h3>Plan run 7: evacuate dorset → hampshire</h3>" in html
    assert '<strong>waiting gate</strong>, <span class="elapsed late">5 min of 2 min objective</span>' in html
    assert "Waiting for approval before group 2 (bcd plan approve 7)" in html
    assert ('<li class="move move-moved" title="run 3 succeeded">directory <span class="move-state">moved</span> '
            "run 3 30 s</li>") in html
    assert "&lt;sql&gt;" in html and "<sql>" not in html
    assert "Skipped: library (already there)" in html


def test_no_plan_running() -> None:
    assert "No recovery plan is running." in section([], True, now=0.0)
    assert "No recovery plan" not in section([], False, now=0.0)
