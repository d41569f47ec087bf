"""bcd.plans.gates: the `require_approval` gate a plan run gets before its first group (only when it moves a
matching service), and the four-eyes refusals of an approval of a plan run's gate."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from bcd.authority import ApprovalGate
from bcd.plans import gates
from bcd.plans.model import GateRecord, Move, MoveState, PlanRun, PlanState

TIER_1 = ApprovalGate.model_validate({"labels": {"tier": "1"}, "approvers": 2, "distinct_from_initiator": True,
                                      "timeout": "30m"})


@dataclass(frozen=True)
class Service:
    labels: dict[str, str] = field(default_factory=dict)


SERVICES = {"directory": Service({"tier": "1"}), "sql": Service({"tier": "1"}), "web": Service()}


def moves(**groups: int) -> tuple[Move, ...]:
    return tuple(Move(name, group, MoveState.PENDING if group else MoveState.SKIPPED) for name, group in groups.items())


def test_a_run_moving_matching_services_gets_one_gate_before_its_first_group() -> None:
    gate = gates.required(TIER_1, SERVICES, moves(directory=1, sql=2, web=2))  # type: ignore[arg-type]
    assert gate == GateRecord(0, 1800.0, approvers=2, distinct_from_initiator=True,
                              why="directory, sql labelled tier=1: approval required before the first group")


@pytest.mark.parametrize("planned", [moves(web=1), moves(directory=0, web=1), ()])
def test_a_run_moving_no_matching_service_gets_none(planned: tuple[Move, ...]) -> None:
    assert gates.required(TIER_1, SERVICES, planned) is None  # type: ignore[arg-type]
    assert gates.required(None, SERVICES, moves(directory=1)) is None  # type: ignore[arg-type]


RUN = PlanRun(7, "evacuate", "dorset", "hampshire", "alice", "patching", False, 0.0, PlanState.WAITING_GATE, ())
GATE = GateRecord(0, 60.0, "waiting", approvers=2, distinct_from_initiator=True, approvals=("bob",))


@pytest.mark.parametrize(("gate", "by", "why"), [
    (GATE, "carol", None),
    (GATE, "bob", "bob has already approved plan run 7; its gate before group 1 needs 2 different approvers"),
    (GATE, "alice", "alice started plan run 7; its gate before group 1 needs an approval by someone else"),
    (GateRecord(1, 60.0, "waiting"), "alice", None),  # a plan's own gate: anyone allowed to approve
])
def test_four_eyes(gate: GateRecord, by: str, why: str | None) -> None:
    assert gates.refusal(RUN, gate, by) == why
