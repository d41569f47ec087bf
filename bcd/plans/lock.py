"""A plan's lock in a cluster, and its runs shared through etcd.

- **The lock**: one etcd lock per plan (the service locks' kind, under the name `plan:<plan>`, which no service
  can have), taken before a plan run starts or resumes and held until it ends, bound to this instance's lease:
  if the instance dies or freezes, the lock goes with its lease. Two instances asked at once: one gets the lock
  (its fencing token is the plan run's id, the same on every instance), the other is refused naming the holder.
- **Who starts an automatic run**: the executing instance in the plan's `to` site, when it is live; the others
  wait `target_site_grace` first (then the lock, and a plan with nothing left to move, stop a second run).
- **The record**: the holder writes the plan's latest run at `plans/<plan>` (fenced by the plan's lock) at every
  change, and before a move starts; every instance reads it from the coordinator's watch and keeps it in its
  own journal (`shared()`), so any of them shows the run and, once its holder has lost the lock, can resume it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from bcd.cluster.records import decoded
from bcd.coordination.base import CoordinationUnavailable, Coordinator, Lock
from bcd.plans.model import PlanRun

log = structlog.get_logger("bcd.plans")


def lock_name(plan: str) -> str:
    return f"plan:{plan}"  # a service's name cannot hold ':' (config NAME): no clash with a service's lock


def record_key(plan: str) -> str:
    return f"plans/{plan}"


@dataclass(frozen=True, slots=True)
class SharedRun:
    """A plan's latest run as etcd holds it, and whether its writer still holds the plan's lock."""

    run: PlanRun
    held: bool


class ClusterPlanLock:
    """The plans' etcd locks and shared records of this instance (`vantage`; a witness, `executor` false, reads
    the records and starts no plan run)."""

    def __init__(self, coordinator: Coordinator, vantage: str = "", executor: bool = True, *,
                 executors: Callable[[], Sequence[str]] = tuple, prefer_target_site: bool = True, grace: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._coordinator = coordinator
        self.vantage = vantage
        self.executor = executor
        self._executors = executors  # the live executing vantages (a vantage is the site it runs in)
        self._prefer_target_site = prefer_target_site
        self.grace = grace
        self._clock = clock
        self._held: dict[str, Lock] = {}
        self._unreadable: dict[str, bytes] = {}

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

    def defer_to(self, to_site: str) -> str | None:
        """Whom an automatic plan run to `to_site` is left to first, as a failover's lock is (`prefer_target_site`,
        `target_site_grace`): the executing instance in `to_site` when it is live and not this one; else None."""
        if not self._prefer_target_site or to_site == self.vantage or to_site not in self._executors():
            return None
        return to_site

    def holds(self, plan: str) -> bool:
        """Whether this instance still holds the plan's lock (a lapsed lease or a refused write ends it)."""
        lock = self._held.get(plan)
        return lock is not None and lock.valid(self._clock())

    async def publish(self, run: PlanRun) -> bool:
        """Write `run` as its plan's shared record, fenced by the plan's lock: False when this instance no longer
        holds it (or the store cannot be asked: nothing may start that the record does not show)."""
        lock = self._held.get(run.plan)
        if lock is None:
            return False
        try:
            return await self._coordinator.fenced_put(lock, record_key(run.plan),
                                                      json.dumps({"id": run.id, **run.to_json()}).encode())
        except CoordinationUnavailable as exc:
            log.warning("plan_record_not_written", plan=run.plan, plan_run=run.id, reason=str(exc))
            return False

    @property
    def version(self) -> int:
        """Grows with every change to the records `shared()` reads (the locks' included)."""
        return self._coordinator.records_version

    def shared(self) -> list[SharedRun]:
        """The plans' latest runs as the coordinator's watch has them (no request); a record that cannot be read
        is logged once and left out."""
        records = self._coordinator.records()
        found = []
        for key, raw in records.items():
            if not key.startswith("plans/"):
                continue
            try:
                data = json.loads(raw)
                run = PlanRun.from_json(int(data["id"]), data)
            except (ValueError, KeyError, TypeError) as exc:
                if self._unreadable.get(key) != raw:
                    self._unreadable[key] = raw
                    log.warning("plan_record_unreadable", key=key, reason=repr(exc))
                continue
            holder = decoded(records.get(f"locks/{lock_name(run.plan)}", b""))
            found.append(SharedRun(run, holder.get("vantage") == run.holder and run.holder is not None))
        return found

