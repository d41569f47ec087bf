"""A verified MQTT command as an intent of `bcd.operations`, and the outcome as the reply's words."""

from __future__ import annotations

from bcd import operations as ops
from bcd.authority import Actor, Role
from bcd.model import RunKind
from bcd.mqtt.commands import Command, CommandAction


async def execute(operations: ops.Operations, command: Command) -> tuple[bool, str]:
    """Carry out a verified command: (accepted, what happened or why not). Never raises for a refusal. It acts
    with the role and scope of the key that signed it (`bcd.operations` decides what that allows)."""
    signer = command.signer
    who = Actor(f"mqtt:{command.by}", Role.OPERATOR) if signer is None else Actor(
        f"mqtt:{command.by}", signer.role, signer.scope)
    outcome = await operations.perform(intent_of(command), who)
    if isinstance(outcome, ops.Accepted):
        return True, outcome.detail
    return False, outcome.reason


def intent_of(command: Command) -> ops.Intent:
    """What the command asks, on behalf of `mqtt:<by>` (its signature was checked by the reader)."""
    by = f"mqtt:{command.by}"
    if command.action in PLAN_INTENTS:
        return _plan_intent(command, by)
    if command.action is CommandAction.PLAN_DRILL:
        assert command.plan is not None
        return ops.DrillPlan(command.plan, by, command.reason or "drill", command.hold)
    if command.action is CommandAction.BOOKING_CANCEL:
        assert command.booking is not None
        return ops.CancelBooking(command.booking, by, command.reason or "")
    if command.action in (CommandAction.APPROVE, CommandAction.ABORT):
        assert command.run is not None
        control = ops.Approve if command.action is CommandAction.APPROVE else ops.Abort
        return control(command.run, by, command.service, command.reason or "")
    assert command.service is not None
    if command.action in (CommandAction.FAILOVER, CommandAction.FAILBACK):
        kind = RunKind.FAILOVER if command.action is CommandAction.FAILOVER else RunKind.FAILBACK
        return ops.Transfer(command.service, kind, by, command.reason or str(kind), command.to, at=command.at)
    if command.action is CommandAction.DRILL:
        return ops.Drill(command.service, by, command.reason or "drill", command.kind, command.hold)
    if command.action is CommandAction.ACK:
        return ops.Acknowledge(command.service, by, command.reason or "acknowledged")
    if command.end:
        return ops.EndMaintenance(command.service, command.site, by)
    assert command.duration is not None
    if command.start is not None:
        return ops.BookMaintenance(command.service, command.site, command.start, command.duration, by,
                                   command.reason or "maintenance", command.force)
    return ops.StartMaintenance(command.service, command.site, command.duration, by, command.reason or "maintenance")


PLAN_INTENTS = frozenset({CommandAction.PLAN_RUN, CommandAction.PLAN_RESUME, CommandAction.PLAN_ABORT,
                          CommandAction.PLAN_APPROVE, CommandAction.PLAN_DONE})


def _plan_intent(command: Command, by: str) -> ops.Intent:
    """A recovery plan's command (`plan_run` names the plan; the others a plan run)."""
    if command.action is CommandAction.PLAN_RUN:
        assert command.plan is not None
        return ops.RunPlan(command.plan, by, command.reason or "mqtt", at=command.at)
    assert command.run is not None
    if command.action is CommandAction.PLAN_DONE:
        assert command.service is not None
        return ops.PlanDone(command.run, command.service, by)
    if command.action is CommandAction.PLAN_ABORT:
        return ops.AbortPlan(command.run, by, command.now)
    return (ops.ResumePlan if command.action is CommandAction.PLAN_RESUME else ops.ApproveGate)(command.run, by)
