"""`wait_healthy:` step: wait until the service is `up` in a site, as bcd's own probes see it."""

from __future__ import annotations

import asyncio
from typing import Any

from bcd.durations import Duration
from bcd.model import SiteState
from bcd.runbooks.steps.base import StepContext, StepError, StepOutcome, StepPlugin
from bcd.runbooks.templates import Templated

POLL = 0.1


class WaitHealthyStep(Templated):
    """`wait_healthy:` step: wait until the service is `up` in `site`."""

    site: str
    within: Duration = 120.0


class WaitHealthyKind:
    retry_timeouts = False

    def default_timeout(self, spec: Any) -> float:
        within: float = spec.within
        return within + 1.0

    async def execute(self, spec: WaitHealthyStep, ctx: StepContext) -> StepOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.within
        while (state := ctx.site_state(spec.site)) is not SiteState.UP:
            if loop.time() >= deadline:
                raise StepError(f"{ctx.service} not up in {spec.site} within {spec.within:g}s (it is {state})")
            await asyncio.sleep(POLL)
        ctx.extra["verified_site"] = spec.site
        return StepOutcome(f"{ctx.service} is up in {spec.site}")


KIND = StepPlugin("wait_healthy", WaitHealthyStep, WaitHealthyKind())
