"""Plan runs shared through etcd (bcd.plans.lock), kept in this instance's journal: every instance shows every
plan run under the same id, and the one that resumes a run after its holder lost the plan's lock finds it here.

A shared version replaces the one journaled here when it is at least as new (`PlanRun.version`: the plan lock's
token, then the count of writes under it); a run in progress here is this instance's own and is left alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

import structlog

from bcd.journal import JournalWriteError
from bcd.plans.lock import SharedRun
from bcd.plans.model import Move, PlanRun, PlanState
from bcd.plans.records import PlanBusy, PlanJournal
from bcd.view import EstateView

log = structlog.get_logger("bcd.plans")

FOLLOW_EVERY = 1.0  # seconds between two reads of the plans' shared records (from the watch: no request)


class PlanLock(Protocol):
    """In a cluster, the plans' etcd locks and shared records (bcd.plans.lock.ClusterPlanLock)."""

    vantage: str
    executor: bool
    grace: float

    def defer_to(self, to_site: str) -> str | None: ...

    async def take(self, plan: str) -> tuple[int | None, str | None]: ...

    async def release(self, plan: str) -> None: ...

    def holds(self, plan: str) -> bool: ...

    async def publish(self, run: PlanRun) -> bool: ...

    def shared(self) -> list[SharedRun]: ...

    @property
    def version(self) -> int: ...


class Follower:
    """Adopts the shared records of `lock` (None: a lone instance, nothing shared) into `journal`; `live` is the
    runner's plan runs in progress here, by id."""

    def __init__(self, journal: PlanJournal, estate: EstateView, lock: PlanLock | None,
                 live: Mapping[int, object]) -> None:
        self.journal = journal
        self.estate = estate
        self._lock = lock
        self._live = live
        self._followed = -1  # the shared records' version last adopted
        self._unadoptable: dict[int, str] = {}  # plan run id -> why its shared record is not kept here (logged once)

    async def follow(self) -> None:
        """Keep the plans' shared records in the journal (see `adopt_shared`), every FOLLOW_EVERY seconds."""
        while True:
            try:
                self.adopt_shared()
            except Exception:  # the one catch-all of this task: log, keep following
                log.exception("plan_records_not_followed")
            await asyncio.sleep(FOLLOW_EVERY)

    def adopt_shared(self) -> None:
        """Journal here each plan run another instance shared through etcd, when its version is at least the
        one journaled here (a run in progress here is this instance's own). A shared run still open whose
        writer no longer holds the plan's lock is `interrupted`: any instance may resume it."""
        assert self._lock is not None
        version = self._lock.version
        if version == self._followed or not self.estate.config.plans:
            return
        self._followed = version
        for shared in self._lock.shared():
            run = shared.run
            if run.id in self._live:
                continue
            if run.state in (PlanState.RUNNING, PlanState.WAITING_GATE) and not shared.held:
                run = replace(run, state=PlanState.INTERRUPTED, detail=(
                    f"the instance at vantage {run.holder} lost the plan's lock during this run: bcd plan resume "
                    f"{run.id} (on any instance)"))
            run = replace(run, moves=tuple(replace(move, run_id=self.local_run_id(move)) for move in run.moves))
            local = self.journal.get(run.id)
            if local is not None and (local == run or run.version < local.version):
                continue
            try:
                self.journal.adopt(run)
            except (PlanBusy, JournalWriteError) as exc:
                if self._unadoptable.get(run.id) != str(exc):
                    self._unadoptable[run.id] = str(exc)
                    log.warning("plan_run_not_adopted", plan=run.plan, plan_run=run.id, why=str(exc))
                continue
            self._unadoptable.pop(run.id, None)
            log.info("plan_run_adopted", plan=run.plan, plan_run=run.id, state=str(run.state), holder=run.holder)

    def local_run_id(self, move: Move) -> int | None:
        """The id in this journal of a move's run: its own, or the mirror of another instance's (None while that
        is not mirrored here yet)."""
        if move.run_name is None or self._lock is None:
            return move.run_id
        vantage, _, number = move.run_name.rpartition(":")
        if vantage == self._lock.vantage:
            return int(number) if number.isdigit() else None
        for record in self.estate.recent_runs(move.service, 100):
            if record.evidence.get("remote_run") == move.run_name:
                return record.id
        return None

