"""A drill's legs, for service and plan drills alike: waiting for a run to end, and moving a service back to the
site it started on as a leg of the drill (its evidence's `drill`: no cooldown)."""

from __future__ import annotations

import asyncio

from bcd.model import RunKind, RunResult
from bcd.operations import Operations, Refused, Transfer
from bcd.view import EstateView

ENDED = frozenset({RunResult.SUCCEEDED, RunResult.FAILED, RunResult.ABORTED, RunResult.ROLLED_BACK,
                   RunResult.INTERRUPTED, RunResult.DRY_RUN})


class Legs:
    def __init__(self, operations: Operations, estate: EstateView, poll: float) -> None:
        self._operations = operations
        self._estate = estate
        self._poll = poll

    async def wait_run(self, run_id: int) -> tuple[RunResult, str]:
        """Run `run_id`'s result and detail once it has ended."""
        while True:
            record = self._estate.run(run_id)
            if record is not None and record.ended is not None and record.result in ENDED:
                return record.result, record.detail
            await asyncio.sleep(self._poll)

    async def move_back(self, service: str, origin: str, by: str, drill: str, runs: list[int]) -> tuple[bool, str]:
        """Move `service` back to `origin` as a leg of `drill` (unless a real run already did; its run appended
        to `runs`): (back, how or why not)."""
        while (running := self._estate.run_in_progress(service)) is not None:  # a real failover, say
            await self.wait_run(running.id)
        if self._estate.services[service].active == origin:
            return True, "already moved back by another run"
        home = self._estate.config.services[service].active
        kind = RunKind.FAILBACK if origin == home else RunKind.FAILOVER
        outcome = await self._operations.perform(Transfer(
            service, kind, by, f"drill {drill}: back to {origin}", to=origin, drill=drill))
        if isinstance(outcome, Refused):
            return False, f"the move back was refused: {outcome.reason}"
        assert outcome.run is not None
        runs.append(outcome.run.id)
        result, detail = await self.wait_run(outcome.run.id)
        if result is not RunResult.SUCCEEDED:
            return False, f"the move back (run {outcome.run.id}) {result}: {detail}"
        return True, f"run {outcome.run.id}"
