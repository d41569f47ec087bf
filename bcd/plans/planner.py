"""Planning a recovery plan's run from the estate as it is (pure: no I/O, no clock).

A plan takes the selected services active on its `from` site, in groups by dependency depth among them
(`bcd.dependencies.groups`); the others are skipped with the reason; those without a failover runbook are
`manual` (an operator moves them and marks them done). `describe()` is the dry run: the groups, what would be
skipped and why, the gates, and the critical path from each runbook's recorded durations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bcd import dependencies
from bcd.config.models import ServiceConfig
from bcd.config.plans import PlanConfig
from bcd.plans.model import GateRecord, Move, MoveState


@dataclass(frozen=True, slots=True)
class Planned:
    moves: tuple[Move, ...]  # the grouped ones first, by group then name; the skipped ones (group 0) last
    gates: tuple[GateRecord, ...]
    critical: dependencies.CriticalPath

    @property
    def groups(self) -> list[list[Move]]:
        count = max((move.group for move in self.moves), default=0)
        return [[m for m in self.moves if m.group == number] for number in range(1, count + 1)]


def graph_of(services: Mapping[str, ServiceConfig]) -> dict[str, list[str]]:
    return {name: service.depends_on for name, service in services.items()}


def plan(config: PlanConfig, services: Mapping[str, ServiceConfig], active: Mapping[str, str],
         seconds: Mapping[str, float]) -> Planned:
    """The moves of a run of `config` on the estate whose active sites are `active`; `seconds` is the
    expected duration of each service's failover (for the critical path)."""
    taken: dict[str, MoveState] = {}
    skipped: list[Move] = []
    for name, service in services.items():
        if not config.selects(name, service):
            continue
        why = _skip_reason(config, service, active.get(name, service.active))
        if why:
            skipped.append(Move(name, 0, MoveState.SKIPPED, why))
        elif service.failover is None:
            taken[name] = MoveState.MANUAL
        else:
            taken[name] = MoveState.PENDING
    graph = graph_of(services)
    moves: list[Move] = []
    for number, group in enumerate(dependencies.groups(graph, taken), start=1):
        for name in group:
            reason = "no failover runbook: move it by hand, then `bcd plan done RUN SERVICE`" \
                if taken[name] is MoveState.MANUAL else ""
            moves.append(Move(name, number, taken[name], reason))
    gates = tuple(GateRecord(gate.after_group, gate.approval.timeout) for gate in config.gates)
    critical = dependencies.critical_path(graph, taken, seconds)
    return Planned((*moves, *sorted(skipped, key=lambda move: move.service)), gates, critical)


def _skip_reason(config: PlanConfig, service: ServiceConfig, active: str) -> str:
    if active == config.to_site:
        return "already there"
    if config.to_site not in service.sites:
        return f"no site {config.to_site!r}"
    if active != config.from_site:
        return f"active on {active}, not {config.from_site}"
    return ""


def describe(name: str, config: PlanConfig, planned: Planned, seconds: Mapping[str, float]) -> str:
    """The dry run and `bcd plan show`: groups in order, skips with reasons, gates, critical path."""
    lines = [f"plan {name}: {config.from_site} -> {config.to_site}, {config.parallel} at once per group, "
             f"on failure: {config.on_service_failure}"]
    if config.description:
        lines.append(f"  {config.description}")
    gates = {gate.after_group: gate for gate in planned.gates}
    if 0 in gates and planned.groups:
        first = gates[0]
        rules = f"{first.approvers} different approver(s)" + (", not the initiator" if first.distinct_from_initiator
                                                               else "")
        lines.append(f"gate: {rules} approve before group 1 (timeout {first.timeout:g}s): {first.why}")
    for number, group in enumerate(planned.groups, start=1):
        lines.append(f"group {number}:")
        for move in group:
            estimate = f" (~{seconds[move.service]:.0f}s)" if move.service in seconds else ""
            note = f" manual: {move.reason}" if move.state is MoveState.MANUAL else ""
            lines.append(f"  {move.service}{estimate}{note}")
        if number in gates and number < len(planned.groups):
            lines.append(f"gate: an operator approves before group {number + 1} "
                         f"(timeout {gates[number].timeout:g}s)")
    skipped = [move for move in planned.moves if move.state is MoveState.SKIPPED]
    if skipped:
        lines.append("skipped:")
        lines.extend(f"  {move.service}: {move.reason}" for move in skipped)
    if not planned.groups:
        lines.append("nothing to move")
    path = planned.critical
    if path.services:
        known = sum(1 for service in path.services if service in seconds)
        lines.append(f"critical path: {path.seconds:.0f}s: {' -> '.join(path.services)} "
                     f"({known} of {len(path.services)} durations recorded)")
    if config.objective is not None:
        lines.append(f"objective: {config.objective:g}s")
    return "\n".join(lines)
