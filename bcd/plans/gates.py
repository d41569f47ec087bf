"""The approvals a plan run waits for: the plan's own `gates:`, and `require_approval:` — a plan run that moves
any service matching that selector (tier 1) waits, before its first group, for an approval under the same
four-eyes rules as a run's approval step (`approvers` different people, none of them the run's initiator with
`distinct_from_initiator`). The plan's moves are then not gated again one by one (bcd.engine.start_run)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from bcd.authority import ApprovalGate
from bcd.plans.model import GateRecord, Move, PlanRun
from bcd.runbooks.gate import approval_gate

if TYPE_CHECKING:
    from bcd.config.models import ServiceConfig


def required(gate: ApprovalGate | None, services: Mapping[str, ServiceConfig], moves: Iterable[Move],
             ) -> GateRecord | None:
    """The gate before the first group when a service the run moves matches `require_approval`, else None."""
    if gate is None:
        return None
    matched = [move.service for move in moves if move.group > 0 and move.service in services
               and approval_gate(gate, services[move.service].labels) is not None]
    if not matched:
        return None
    return GateRecord(0, gate.timeout, approvers=gate.approvers, distinct_from_initiator=gate.distinct_from_initiator,
                      why=f"{', '.join(matched)} labelled {gate}: approval required before the first group")


def refusal(run: PlanRun, gate: GateRecord, by: str) -> str | None:
    """Why `by` may not approve `gate` of `run` (four eyes), or None."""
    if by in gate.approvals:
        return (f"{by} has already approved plan run {run.id}; its gate before {gate.before} needs "
                f"{gate.approvers} different approvers")
    if gate.distinct_from_initiator and by == run.by:
        return f"{by} started plan run {run.id}; its gate before {gate.before} needs an approval by someone else"
    return None
