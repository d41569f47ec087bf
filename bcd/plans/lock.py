"""A plan's lock in a cluster: one etcd lock per plan (the service locks' kind, under the name `plan:<plan>`,
which no service can have), taken before a plan run starts or resumes and held until it ends, bound to this
instance's lease: if the instance dies, the lock goes with its lease. Two instances asked at once: one gets the
lock (its fencing token is recorded in the plan run), the other is refused naming the holder."""

from __future__ import annotations

import json

import structlog

from bcd.coordination.base import CoordinationUnavailable, Coordinator, Lock

log = structlog.get_logger("bcd.plans")


def lock_name(plan: str) -> str:
    return f"plan:{plan}"  # a service's name cannot hold ':' (config NAME): no clash with a service's lock


class ClusterPlanLock:
    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator
        self._held: dict[str, Lock] = {}

    async def take(self, plan: str) -> tuple[int | None, str | None]:
        """(the fencing token, None) once this instance holds the plan's lock; (None, who holds it) otherwise."""
        try:
            lock = await self._coordinator.acquire(lock_name(plan))
        except CoordinationUnavailable as exc:
            return None, f"nobody can say: coordination unavailable ({exc})"
        if lock is None:
            return None, await self._holder(plan)
        self._held[plan] = lock
        log.info("plan_lock_acquired", plan=plan, token=lock.token)
        return lock.token, None

    async def release(self, plan: str) -> None:
        lock = self._held.pop(plan, None)
        if lock is not None:
            try:
                await self._coordinator.release(lock)
            except CoordinationUnavailable as exc:  # the lease ends it if we cannot
                log.warning("plan_lock_not_released", plan=plan, error=str(exc))

    async def _holder(self, plan: str) -> str:
        if plan in self._held:
            return "this instance"
        found: dict[str, bytes] = {}
        for _ in range(2):  # once more if etcd did not answer in time: naming the holder is worth a second try
            try:
                found = await self._coordinator.read(f"locks/{lock_name(plan)}")
                break
            except CoordinationUnavailable:
                continue
        try:
            vantage = json.loads(found.get(f"locks/{lock_name(plan)}", b"{}")).get("vantage")
        except (ValueError, AttributeError):
            vantage = None
        return f"the instance at vantage {vantage}" if isinstance(vantage, str) else "another instance"
