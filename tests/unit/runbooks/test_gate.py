"""`require_approval:` the approval step put in front of a failover of a matching service, and nowhere else."""

from __future__ import annotations

from bcd.authority import ApprovalGate
from bcd.model import RunKind
from bcd.runbooks.gate import GATE_STEP, gated
from bcd.runbooks.specs import Runbook

RUNBOOK = Runbook.model_validate({"steps": [{"name": "switch", "sleep": {"duration": "1s"}}]})
GATE = ApprovalGate.model_validate({"labels": {"tier": "1"}, "approvers": 2, "distinct_from_initiator": True})


def test_a_failover_of_a_matching_service_waits_for_the_gates_approval_first() -> None:
    runbook = gated(RUNBOOK, GATE, RunKind.FAILOVER, "payroll", {"tier": "1", "owner": "dorset-cc"})
    assert [(step.name, step.kind) for step in runbook.steps] == [(GATE_STEP, "approval"), ("switch", "sleep")]
    approval = runbook.steps[0].approval
    assert approval is not None
    assert (approval.approvers, approval.distinct_from_initiator, approval.timeout) == (2, True, 3600.0)
    assert approval.prompt == "payroll is labelled tier=1: approval required before the first step"
    assert [step.name for step in RUNBOOK.steps] == ["switch"]  # the configured runbook is left as it was


def test_other_services_failbacks_and_no_gate_run_the_runbook_as_it_is() -> None:
    assert gated(RUNBOOK, GATE, RunKind.FAILOVER, "library", {"tier": "2"}) is RUNBOOK
    assert gated(RUNBOOK, GATE, RunKind.FAILOVER, "library", {}) is RUNBOOK
    assert gated(RUNBOOK, GATE, RunKind.FAILBACK, "payroll", {"tier": "1"}) is RUNBOOK
    assert gated(RUNBOOK, None, RunKind.FAILOVER, "payroll", {"tier": "1"}) is RUNBOOK
