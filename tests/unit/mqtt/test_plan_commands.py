"""The recovery plans' MQTT commands: their shapes accepted, what each needs refused when missing, and the
intent each becomes."""

from __future__ import annotations

from typing import Any

import pytest

from bcd import operations as ops
from bcd.mqtt.commands import Command, Refusal
from bcd.mqtt.execute import intent_of
from tests.unit.mqtt.test_commands import check, raw, signed


@pytest.mark.parametrize(("fields", "intent"), [
    ({"action": "plan_run", "plan": "evacuate", "service": None},
     ops.RunPlan("evacuate", "mqtt:olive", "drill")),
    ({"action": "plan_resume", "run": 4, "service": None}, ops.ResumePlan(4, "mqtt:olive")),
    ({"action": "plan_abort", "run": 4, "now": True, "service": None}, ops.AbortPlan(4, "mqtt:olive", now=True)),
    ({"action": "plan_approve", "run": 4, "service": None}, ops.ApproveGate(4, "mqtt:olive")),
    ({"action": "plan_done", "run": 4}, ops.PlanDone(4, "payroll", "mqtt:olive")),
    ({"action": "plan_drill", "plan": "evacuate", "service": None}, ops.DrillPlan("evacuate", "mqtt:olive", "drill")),
    ({"action": "plan_drill", "plan": "evacuate", "hold": "10m", "service": None},
     ops.DrillPlan("evacuate", "mqtt:olive", "drill", 600.0)),
])
def test_plan_commands_become_plan_intents(fields: dict[str, Any], intent: ops.Intent) -> None:
    command = check(raw(signed(**fields)))
    assert isinstance(command, Command), command
    assert intent_of(command) == intent


@pytest.mark.parametrize(("fields", "reason"), [
    ({"action": "plan_run", "service": None}, "plan is required"),
    ({"action": "plan_run", "plan": "evacuate"}, "plan_run does not take service"),
    ({"action": "plan_done", "run": 4, "service": None}, "service is required"),
    ({"action": "plan_done", "service": "payroll"}, "run must be a positive integer (a run id)"),
    ({"action": "plan_abort", "run": 4, "now": "yes", "service": None}, "now must be true or false"),
    ({"action": "plan_approve", "run": 4, "plan": "x", "service": None}, "plan_approve does not take plan"),
    ({"action": "plan_drill", "service": None}, "plan is required"),
    ({"action": "plan_drill", "plan": "evacuate"}, "plan_drill does not take service"),
    ({"action": "plan_drill", "plan": "evacuate", "kind": "runbook", "service": None},
     "plan_drill does not take kind"),
    ({"action": "plan_drill", "plan": "evacuate", "hold": "soon", "service": None}, "hold: "),
    ({"action": "plan_drill", "plan": "evacuate", "hold": "2d", "service": None}, "hold: "),
    ({"action": "plan_drill", "plan": 7, "service": None}, "plan must be a string"),
])
def test_plan_commands_missing_what_they_need_are_refused(fields: dict[str, Any], reason: str) -> None:
    refusal = check(raw(signed(**fields)))
    assert isinstance(refusal, Refusal) and refusal.signed, refusal
    assert refusal.reason == reason or (reason.endswith(": ") and refusal.reason.startswith(reason)), refusal
