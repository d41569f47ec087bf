"""A drill's legs, for service and plan drills alike: whether the policy would let a round trip's two legs go now,
waiting for a run to end, and moving a service back to the site it started on as a leg of the drill (its
evidence's `drill`: no cooldown). A move back that is refused or fails leaves the service away from where it
started: the drill's reason says so and names the command that restores it."""

from __future__ import annotations

import asyncio

from bcd.model import Guard, RunKind, RunResult
from bcd.operations import Operations, Refused, Transfer
from bcd.policy import Request
from bcd.view import EstateView

ENDED = frozenset({RunResult.SUCCEEDED, RunResult.FAILED, RunResult.ABORTED, RunResult.ROLLED_BACK,
                   RunResult.INTERRUPTED, RunResult.DRY_RUN})


class Legs:
    def __init__(self, operations: Operations, estate: EstateView, poll: float) -> None:
        self._operations = operations
        self._estate = estate
        self._poll = poll

    def refusal(self, service: str, origin: str, target: str, drill: str) -> str | None:
        """Why the policy would refuse, now, either leg of a round trip of `service` from `origin` to `target` and
        back (a cooldown either way, a site's data lag, …), or None. Both are checked before the first starts:
        a drill must not start that it cannot end where it began."""
        there = self._estate.verdict(service, Request(RunKind.FAILOVER, target, drill=drill))
        if there.to_site is None:
            return f"its move to {target} would be refused: {_unforceable(there.reason)}"
        return self.back_refusal(service, origin, target, drill)

    def back_refusal(self, service: str, origin: str, target: str, drill: str) -> str | None:
        """Why the policy would refuse, now, to move `service` back to `origin` from `target` (where the drill
        takes it), or None."""
        back = self._estate.verdict(service, Request(self._back_kind(service, origin), origin, drill=drill), target)
        if back.to_site is None:
            return f"its move back to {origin} would be refused: {_unforceable(back.reason)}"
        return None

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
        kind = self._back_kind(service, origin)
        outcome = await self._operations.perform(Transfer(
            service, kind, by, f"drill {drill}: back to {origin}", to=origin, drill=drill))
        if isinstance(outcome, Refused):
            acknowledge = outcome.guard in (Guard.RUN_FAILED, Guard.RUN_INTERRUPTED)
            return False, (f"the move back was refused: {outcome.reason}; "
                           f"{self._restore(service, origin, kind, drill, acknowledge)}")
        assert outcome.run is not None
        runs.append(outcome.run.id)
        result, detail = await self.wait_run(outcome.run.id)
        if result is not RunResult.SUCCEEDED:
            return False, (f"the move back (run {outcome.run.id}) {result}: {detail}; "
                           f"{self._restore(service, origin, kind, drill, acknowledge=True)}")
        return True, f"run {outcome.run.id}"

    def _back_kind(self, service: str, origin: str) -> RunKind:
        """A failback when the drill started on the service's home site, else a failover to where it started."""
        return RunKind.FAILBACK if origin == self._estate.config.services[service].active else RunKind.FAILOVER

    def _restore(self, service: str, origin: str, kind: RunKind, drill: str, acknowledge: bool) -> str:
        """Where the service was left and the command that moves it back (after `bcd ack` when a run failed)."""
        where = self._estate.services[service].active
        to = "" if kind is RunKind.FAILBACK else f" --to {origin}"
        command = f"bcd {kind} {service}{to} --reason 'restore after drill {drill}'"
        if acknowledge:
            command = f"bcd ack {service}`, then `{command}"
        return f"{service} is left on {where}: restore it with `{command}`"


def _unforceable(reason: str) -> str:
    """A policy refusal as a drill says it: a drill cannot be forced."""
    return reason.removesuffix(" (use force)")
