"""`approval:` step: the run waits until an operator approves it (API, CLI or MQTT) or the time runs out; with
`approvers: 2` until two different people have, and with `distinct_from_initiator` none of them the one who
started the run (four eyes). Who may approve is decided in `bcd.operations`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bcd.durations import Duration
from bcd.runbooks.steps.base import ApprovalNeed, StepContext, StepOutcome, StepPlugin
from bcd.runbooks.templates import Spec


class ApprovalStep(Spec):
    """`approval:` step: wait for an operator's approve (API, CLI or MQTT)."""

    timeout: Duration = 900.0
    prompt: str = ""
    approvers: int = Field(1, ge=1, le=5, description="how many different people must approve")
    distinct_from_initiator: bool = Field(False, description="the operator who started the run may not approve")


class ApprovalKind:
    retry_timeouts = False

    def default_timeout(self, spec: Any) -> float:
        timeout: float = spec.timeout
        return timeout + 1.0

    async def execute(self, spec: ApprovalStep, ctx: StepContext) -> StepOutcome:
        need = ApprovalNeed(spec.prompt, spec.approvers, spec.distinct_from_initiator)
        by = await ctx.wait_approval(need, spec.timeout)
        return StepOutcome(f"approved by {by}")


KIND = StepPlugin("approval", ApprovalStep, ApprovalKind())
