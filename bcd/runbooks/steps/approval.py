"""`approval:` step: the run waits until an operator approves it (API, CLI or MQTT) or the time runs out."""

from __future__ import annotations

from typing import Any

from bcd.durations import Duration
from bcd.runbooks.steps.base import StepContext, StepOutcome, StepPlugin
from bcd.runbooks.templates import Spec


class ApprovalStep(Spec):
    """`approval:` step: wait for an operator's approve (API, CLI or MQTT)."""

    timeout: Duration = 900.0
    prompt: str = ""


class ApprovalKind:
    retry_timeouts = False

    def default_timeout(self, spec: Any) -> float:
        timeout: float = spec.timeout
        return timeout + 1.0

    async def execute(self, spec: ApprovalStep, ctx: StepContext) -> StepOutcome:
        by = await ctx.wait_approval(spec.prompt, spec.timeout)
        return StepOutcome(f"approved by {by}")


KIND = StepPlugin("approval", ApprovalStep, ApprovalKind())
