"""A recovery plan's run as values: each service's state in it, the gates, and the run itself (frozen; the
journal keeps them as JSON, `bcd.plans.records`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class MoveState(StrEnum):
    """Where one service of a plan run is."""

    PENDING = "pending"  # not started yet
    MOVING = "moving"  # its failover run is in progress
    MOVED = "moved"  # its run succeeded
    FAILED = "failed"  # its run (or its start) failed
    BLOCKED = "blocked"  # its run was cut short (kill -9): acknowledge it or mark it done, then resume
    SKIPPED = "skipped"  # nothing to do (already there, not on `from`) or a dependency failed
    MANUAL = "manual"  # no runbook: waits for an operator's `bcd plan done RUN SERVICE`
    DONE = "done"  # marked done by an operator


FINISHED_MOVES = frozenset({MoveState.MOVED, MoveState.FAILED, MoveState.SKIPPED, MoveState.DONE})
"""A service in one of these states never moves again in this plan run (resume skips it)."""


class PlanState(StrEnum):
    RUNNING = "running"
    WAITING_GATE = "waiting_gate"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    INTERRUPTED = "interrupted"  # the daemon stopped during it: `bcd plan resume RUN`


OPEN_STATES = frozenset({PlanState.RUNNING, PlanState.WAITING_GATE, PlanState.INTERRUPTED})
"""While a plan has a run in one of these states, no other run of it starts (the plan's lock)."""


@dataclass(frozen=True, slots=True)
class Move:
    """One service of a plan run: its group (0: skipped before grouping), state, reason and its run."""

    service: str
    group: int
    state: MoveState
    reason: str = ""
    run_id: int | None = None  # in this instance's journal
    started: float | None = None
    ended: float | None = None
    run_name: str | None = None  # in a cluster, `<vantage>:<run id>`: the run as every instance names it

    def to_json(self) -> dict[str, Any]:
        # by hand, not asdict(): a plan run's record is written whole at each change of one of its moves
        return {"service": self.service, "group": self.group, "state": self.state.value, "reason": self.reason,
                "run_id": self.run_id, "started": self.started, "ended": self.ended, "run_name": self.run_name}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Move:
        return cls(**{**data, "state": MoveState(data["state"])})


@dataclass(frozen=True, slots=True)
class GateRecord:
    """A gate before group `after_group + 1` (after_group 0: before the first, `require_approval`): waiting,
    approved (by whom, when) or timed out; it opens once `approvers` different people approved (none of them
    the run's initiator with `distinct_from_initiator`)."""

    after_group: int
    timeout: float
    state: str = "closed"  # closed (not reached) | waiting | approved | timed_out
    by: str | None = None
    at: float | None = None
    approvers: int = 1
    distinct_from_initiator: bool = False
    approvals: tuple[str, ...] = ()  # who approved so far
    why: str = ""  # why the gate is there, when not the plan's own `gates:`

    def to_json(self) -> dict[str, Any]:
        return {"after_group": self.after_group, "timeout": self.timeout, "state": self.state, "by": self.by,
                "at": self.at, "approvers": self.approvers, "distinct_from_initiator": self.distinct_from_initiator,
                "approvals": list(self.approvals), "why": self.why}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateRecord:
        return cls(**{**data, "approvals": tuple(data.get("approvals", ()))})

    @property
    def before(self) -> str:
        return f"group {self.after_group + 1}"


@dataclass(frozen=True, slots=True)
class PlanRun:
    """One run of a plan, as the journal keeps it (`id` 0 before it is written)."""

    id: int
    plan: str
    from_site: str
    to_site: str
    by: str
    reason: str
    forced: bool
    started: float
    state: PlanState
    moves: tuple[Move, ...]
    gates: tuple[GateRecord, ...] = ()
    ended: float | None = None
    detail: str = ""
    objective: float | None = None
    events: tuple[str, ...] = field(default=())  # operators' actions on it: "at by: what"
    # in a cluster: the vantage that last wrote the run, the plan lock token it held, and its write count
    # under that token; (token, seq) orders the versions of a run that instances share through etcd
    holder: str | None = None
    token: int | None = None
    seq: int = 0
    drill: str | None = None  # a plan drill's run (bcd.drills.plan): its outcome is the drill's, not the plan's

    @property
    def version(self) -> tuple[int, int]:
        return (self.token or 0, self.seq)

    def move(self, service: str) -> Move | None:
        return next((move for move in self.moves if move.service == service), None)

    def with_move(self, updated: Move) -> PlanRun:
        return replace(self, moves=tuple(updated if m.service == updated.service else m for m in self.moves))

    def with_gate(self, updated: GateRecord) -> PlanRun:
        return replace(self, gates=tuple(updated if g.after_group == updated.after_group else g for g in self.gates))

    @property
    def groups(self) -> list[list[str]]:
        """The services to move (or mark done), by group."""
        count = max((move.group for move in self.moves), default=0)
        return [[m.service for m in self.moves if m.group == number] for number in range(1, count + 1)]

    def counts(self) -> dict[str, int]:
        """Services by state (every state shown, 0 included)."""
        return {state.value: sum(move.state is state for move in self.moves) for state in MoveState}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "plan": self.plan, "from": self.from_site, "to": self.to_site, "by": self.by,
            "reason": self.reason, "forced": self.forced, "started": self.started, "ended": self.ended,
            "state": self.state.value, "detail": self.detail, "objective": self.objective,
            "groups": self.groups, "services": [move.to_json() for move in self.moves],
            "gates": [gate.to_json() for gate in self.gates], "events": list(self.events),
            "holder": self.holder, "token": self.token, "seq": self.seq,
        } | ({"drill": self.drill} if self.drill else {})

    @classmethod
    def from_json(cls, run_id: int, data: dict[str, Any]) -> PlanRun:
        """A run from its JSON (the journal's row, or the record shared in etcd); KeyError/ValueError/TypeError
        when the data is not one."""
        return cls(
            id=run_id, plan=data["plan"], from_site=data["from"], to_site=data["to"], by=data["by"],
            reason=data["reason"], forced=data["forced"], started=data["started"], state=PlanState(data["state"]),
            moves=tuple(Move.from_json(move) for move in data["services"]),
            gates=tuple(GateRecord.from_json(gate) for gate in data["gates"]), ended=data["ended"],
            detail=data["detail"], objective=data["objective"], events=tuple(data["events"]),
            holder=data.get("holder"), token=data.get("token"), seq=int(data.get("seq", 0)), drill=data.get("drill"),
        )
