"""`approval:` step: the run waits until an operator approves it (API, CLI or MQTT) or the time runs out."""

from __future__ import annotations

from typing import Any

from bcd.runbooks.specs import ApprovalStep
from bcd.runbooks.steps.base import StepContext, StepOutcome


class ApprovalKind:
    retry_timeouts = False

    def default_timeout(self, spec: Any) -> float:
        timeout: float = spec.timeout
        return timeout + 1.0

    async def execute(self, spec: ApprovalStep, ctx: StepContext) -> StepOutcome:
        by = await ctx.wait_approval(spec.prompt, spec.timeout)
        return StepOutcome(f"approved by {by}")
