"""`require_approval:` a failover of a service matching the selector waits for an approval before its first
step, even when its runbook has none: the run gets an approval step `require_approval` in front of its
runbook's steps (journaled and shown like any step; approved through `bcd.operations` like any approval)."""

from __future__ import annotations

from collections.abc import Mapping

from bcd.authority import ApprovalGate
from bcd.model import RunKind
from bcd.runbooks.specs import Runbook, Step

GATE_STEP = "require_approval"


def approval_gate(gate: ApprovalGate | None, labels: Mapping[str, str]) -> ApprovalGate | None:
    """The gate a service with `labels` must pass, or None. The hook for recovery plans (issue 13, h/plans):
    a plan that moves any service for which this is not None starts with `gate_step(gate, ...)` too."""
    return gate if gate is not None and gate.matches(labels) else None


def gate_step(gate: ApprovalGate, what: str) -> Step:
    """The approval step the gate puts first; `what` names what waits (e.g. the service)."""
    return Step.model_validate({"name": GATE_STEP, "approval": {
        "timeout": gate.timeout, "prompt": f"{what} is labelled {gate}: approval required before the first step",
        "approvers": gate.approvers, "distinct_from_initiator": gate.distinct_from_initiator,
    }})


def gated(runbook: Runbook, gate: ApprovalGate | None, kind: RunKind, service: str, labels: Mapping[str, str],
          ) -> Runbook:
    """`runbook`, with the gate's approval step first for a failover of a `service` (its labels) that matches
    the gate (a failback returns home: it is not gated)."""
    matching = approval_gate(gate, labels) if kind is RunKind.FAILOVER else None
    if matching is None:
        return runbook
    return runbook.model_copy(update={"steps": [gate_step(matching, service), *runbook.steps]})
