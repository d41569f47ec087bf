"""`sleep:` step: wait a fixed time (e.g. for DNS TTLs to run out)."""

from __future__ import annotations

import asyncio
from typing import Any

from bcd.durations import Duration
from bcd.runbooks.steps.base import StepContext, StepOutcome, StepPlugin
from bcd.runbooks.templates import Spec


class SleepStep(Spec):
    duration: Duration


class SleepKind:
    retry_timeouts = False

    def default_timeout(self, spec: Any) -> float:
        duration: float = spec.duration
        return duration + 5.0

    async def execute(self, spec: SleepStep, ctx: StepContext) -> StepOutcome:
        await asyncio.sleep(spec.duration)
        return StepOutcome(f"slept {spec.duration:g}s")


KIND = StepPlugin("sleep", SleepStep, SleepKind())
