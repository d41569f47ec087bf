"""Carries out runbooks: ordered steps, each journaled as started before it runs, with per-attempt
timeouts, retries with jittered backoff (tenacity) for errors that may pass, `on_failure`, rollback,
approvals, operator abort, dry runs, one run per service and a global limit on concurrent runs.

A run that the daemon cannot finish (SIGTERM, crash) is journaled `interrupted`; at start, `recover()`
marks whatever the journal shows as still running `interrupted` too. Nothing is ever re-run on its own.

In a cluster a run carries a `RunFence` (its lock): `{fence_token}` is the lock's token, every step is
recorded with the fence before it starts and runs only while the lock is valid (less a safety margin); a lost
lock stops the run at once, journaled `interrupted` with detail `lost_lock`, and no further step runs
(rollback included: it needs the lock as much as any step).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from bcd.broker import BrokerLink
from bcd.events import ApprovalWaiting, Event, EventKind, RunFinished, RunStarted, StepFinished, StepStarted
from bcd.journal import INTERRUPTED, JournalWriteError, RunJournal, RunRecord, StepRecord
from bcd.lifetime import hold
from bcd.model import PlanRef, RunKind, RunResult, SiteState
from bcd.policy import RunInfo
from bcd.recoveries import target_verified
from bcd.runbooks import approvals, orphans
from bcd.runbooks.fence import LostLock as LostLock  # noqa: PLC0414 (bcd.cluster imports it from here)
from bcd.runbooks.fence import under_lock
from bcd.runbooks.render import mask, render
from bcd.runbooks.specs import Runbook, Step
from bcd.runbooks.steps.base import ApprovalNeed, StepContext, StepError, StepOutcome
from bcd.runbooks.steps.registry import BY_NAME
from bcd.runbooks.templates import RENDERED
from bcd.stats import Histogram

log = structlog.get_logger("bcd.runner")

DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STEP_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


class RunFence(Protocol):
    """A run's hold on its service's cluster lock (see bcd.cluster)."""

    @property
    def token(self) -> int:
        """The fencing token: `{fence_token}` / BCD_FENCE_TOKEN."""
        ...

    async def before_step(self, run_id: int, seq: int, phase: str, step: str) -> None:
        """Record the step as starting, fenced; raise LostLock when the lock is no longer valid or the fence
        refused the record."""
        ...

    def after_step(self, run_id: int, seq: int, phase: str, step: str, outcome: str) -> None:
        """Record the step's outcome (written in the background, fenced)."""
        ...

    async def expired(self) -> str:
        """Return (the reason) once the lock is lost or its validity, less the safety margin, runs out."""
        ...


class RunHooks(Protocol):
    """What the runner needs from the rest of the daemon."""

    def site_state(self, service: str, site: str) -> SiteState: ...

    def run_changed(self, service: str) -> None: ...

    def run_succeeded(self, service: str, to_site: str, run_id: int) -> None: ...

    def emit(self, event: Event, **log_fields: object) -> None: ...


@dataclass(frozen=True)
class RunRequest:
    service: str
    runbook_name: str
    runbook: Runbook
    kind: RunKind
    from_site: str
    to_site: str
    trigger: str  # "auto", "plan", or the operator's name
    reason: str
    dry_run: bool = False
    forced: bool = False
    evidence: dict[str, Any] = field(default_factory=dict)
    detected_at: float | None = None
    fence: RunFence | None = None  # the cluster lock this run holds; None: the local lock only
    plan: PlanRef | None = None  # the recovery plan's run this move belongs to


@dataclass
class ActiveRun:
    request: RunRequest
    id: int
    started: float
    task: asyncio.Task[None] | None = None
    main: asyncio.Task[bool] | None = None
    approval: asyncio.Future[str] | None = None
    waiting_step: str = ""
    need: ApprovalNeed | None = None  # what the approval waited on asks for
    approvals: list[str] = field(default_factory=list)  # who approved it so far
    aborted_by: str | None = None
    verified_at: float | None = None
    seq: int = 0
    step_name: str = ""

    def info(self) -> RunInfo:
        request = self.request
        drill = "" if "drill" not in request.evidence else (
            "runbook" if request.from_site == request.to_site else "round_trip")
        return RunInfo(str(self.id), request.kind, request.to_site, self.approval is not None, self.waiting_step,
                       drill)


TRIGGERS = ("auto", "operator")  # the trigger label: automatic, or any operator (and `drill`: see `_trigger`)
FINAL_RESULTS = tuple(str(r) for r in RunResult if r not in (RunResult.RUNNING, RunResult.WAITING_APPROVAL))


@dataclass
class RunStats:
    """Counters for /metrics, label sets pruned with the services on reload."""

    runs: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # service, runbook, trigger, result
    durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    step_durations: dict[tuple[str, str, str], Histogram] = field(default_factory=dict)
    last_failover: dict[str, float] = field(default_factory=dict)
    detection: dict[str, float] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)

    def declare(self, runbooks: dict[str, set[str]]) -> None:
        """Show every outcome a service's runbooks can have at 0 before it happens, so that the first failed
        run is an increase (Prometheus' `increase()` does not see a series that appears at 1)."""
        for service, names in runbooks.items():
            for runbook in names:
                for trigger in TRIGGERS:
                    for result in FINAL_RESULTS:
                        self.runs.setdefault((service, runbook, trigger, result), 0)

    def retain(self, services: set[str]) -> None:
        self.runs = Counter({k: v for k, v in self.runs.items() if k[0] in services})
        self.durations = {k: v for k, v in self.durations.items() if k[0] in services}
        self.step_durations = {k: v for k, v in self.step_durations.items() if k[0] in services}
        for table in (self.last_failover, self.detection, self.total):
            for service in set(table) - services:
                del table[service]


class RunConflict(Exception):
    """A run of this service is already in progress (HTTP 409)."""


class Runner:
    def __init__(
        self,
        journal: RunJournal,
        hooks: RunHooks,
        http: Callable[[], aiohttp.ClientSession],
        *,
        max_concurrent: int = 4,
        secrets: frozenset[str] = frozenset(),
        broker: BrokerLink | None = None,
        clock: Callable[[], float] = time.time,
        kill_orphans: bool = True,
    ) -> None:
        self.journal = journal
        self.hooks = hooks
        self._http = http
        self._slots = asyncio.Semaphore(max_concurrent)
        self.secrets = secrets
        self.broker = broker
        self.clock = clock
        self.kill_orphans = kill_orphans
        self.active: dict[str, ActiveRun] = {}  # service → its run in progress
        self.stats = RunStats()

    # -- queries -------------------------------------------------------------------------------------
    def running(self, service: str) -> RunInfo | None:
        run = self.active.get(service)
        return run.info() if run is not None else None

    def find(self, run_id: int) -> ActiveRun | None:
        return next((run for run in self.active.values() if run.id == run_id), None)

    # -- control -------------------------------------------------------------------------------------
    def recover(self) -> list[RunRecord]:
        """Mark runs the journal shows unfinished (the daemon died during them) as interrupted. Process groups
        their steps left running are reported in the run (detail, step output, a log line) and terminated,
        unless `kill_orphans` is false."""
        now = self.clock()
        stale = self.journal.unfinished()
        for record in stale:
            notes = orphans.settle(self.journal, record, kill=self.kill_orphans)
            self.journal.mark_interrupted(record.id, now, "; ".join([INTERRUPTED, *notes.values()]), notes)
            label = _trigger(record.trigger, record.evidence)
            self.stats.runs[(record.service, record.runbook, label, "interrupted")] += 1
            reason = "; ".join(["interrupted: the daemon stopped during this run", *notes.values()])
            self.hooks.emit(
                Event(EventKind.RUN_FINISHED, now, record.service, None, reason,
                      RunFinished(record.id, RunResult.INTERRUPTED.value, record.kind.value)),
                run_id=record.id, result="interrupted",
            )
        return stale

    def start(self, request: RunRequest) -> ActiveRun:
        """Journal the run, then start it. Raises RunConflict if the service already has one, JournalWriteError
        (nothing started) if the run cannot be journaled."""
        if request.service in self.active:
            raise RunConflict(f"run {self.active[request.service].id} of {request.service} is in progress")
        now = self.clock()
        record = RunRecord(
            id=0, service=request.service, runbook=request.runbook_name, kind=request.kind, trigger=request.trigger,
            reason=request.reason, from_site=request.from_site, to_site=request.to_site, dry_run=request.dry_run,
            forced=request.forced, evidence=request.evidence, started=now, ended=None, result=RunResult.RUNNING,
            detail="", acknowledged_by=None, detected_at=request.detected_at, verified_at=None,
        )
        # synced by the first step's durable(); a fenced run's now, as its steps reach etcd before the journal
        run = ActiveRun(request, self.journal.create(record, sync=request.fence is not None), now)
        self.active[request.service] = run
        if request.detected_at is not None and request.kind is RunKind.FAILOVER and not request.dry_run:
            self.stats.detection[request.service] = max(0.0, now - request.detected_at)
        self.hooks.emit(
            Event(EventKind.RUN_STARTED, now, request.service, None, request.reason, RunStarted(
                run.id, str(request.kind), request.runbook_name, request.from_site, request.to_site,
                request.trigger, request.dry_run, request.forced,
            )),
            run_id=run.id, kind=str(request.kind), to_site=request.to_site, trigger=request.trigger,
            dry_run=request.dry_run, forced=request.forced,
        )
        run.task = asyncio.get_running_loop().create_task(self._execute(run), name=f"run-{run.id}")
        self.hooks.run_changed(request.service)
        return run

    def waiting(self, run_id: int) -> ActiveRun | None:
        """The run, while it waits for an approval it has not had yet."""
        run = self.find(run_id)
        return run if approvals.waiting(run) else None

    def approve(self, run_id: int, by: str, reason: str = "") -> bool:
        """Count `by`'s approval (journaled, with `reason`; bcd.runbooks.approvals). False when the run waits for
        none. Whether `by` may approve is `bcd.operations`'s."""
        run = self.waiting(run_id)
        if run is None:
            return False
        self.hooks.emit(approvals.count(run, run.request.service, by, reason, self.clock()), run_id=run.id, by=by)
        return True

    def abort(self, run_id: int, by: str) -> bool:
        run = self.find(run_id)
        if run is None or run.main is None or run.aborted_by is not None:
            return False
        run.aborted_by = by
        run.main.cancel()
        return True

    async def run(self, ready: asyncio.Event) -> None:
        """Its lifetime (bcd.lifetime): runs start from `start()`; when cancelled, `stop()`."""
        await hold(ready, self.stop)

    async def stop(self) -> None:
        """Shutdown: runs in progress are cancelled and journaled as interrupted."""
        tasks = [run.task for run in self.active.values() if run.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- execution -----------------------------------------------------------------------------------
    async def _execute(self, run: ActiveRun) -> None:
        result = RunResult.INTERRUPTED
        detail = "the daemon stopped during this run"
        try:
            async with self._slots:
                try:
                    result, detail = await self._phases(run)
                except JournalWriteError as exc:  # a step is never run unless journaled as started (rollback too)
                    log.error("step_not_journaled", service=run.request.service, run_id=run.id, step=run.step_name,
                              error=str(exc))
                    result, detail = RunResult.FAILED, (f"{exc}: step {run.seq} {run.step_name!r} did not run, nor "
                                                        "any after it (no rollback: it could not be journaled either)")
        finally:
            self._finish(run, result, detail)

    async def _phases(self, run: ActiveRun) -> tuple[RunResult, str]:
        """The steps (and rollback), then the cleanup whatever they came to (not on shutdown): the run succeeds
        only when both do."""
        result, detail = await self._steps(run)
        cleanup = run.request.runbook.cleanup
        if not cleanup or result is RunResult.INTERRUPTED:
            return result, detail
        if await self._phase(run, "cleanup", cleanup):  # an abort ended the steps, never the cleanup
            return result, detail + "; cleanup completed"
        return (RunResult.FAILED if result is RunResult.SUCCEEDED else result), detail + "; cleanup failed"

    async def _steps(self, run: ActiveRun) -> tuple[RunResult, str]:
        request = run.request
        run.main = asyncio.get_running_loop().create_task(self._phase(run, "main", request.runbook.steps))
        try:
            ok = await run.main
        except asyncio.CancelledError:
            if run.aborted_by is None:
                raise  # shutdown, not an operator's abort
            ok = False
        except LostLock as exc:
            log.warning("lost_lock", service=request.service, run_id=run.id, reason=str(exc))
            return RunResult.INTERRUPTED, f"lost_lock: {exc}; no further step ran"
        if ok:
            return (RunResult.DRY_RUN, "dry run: no step executed") if request.dry_run else (
                RunResult.SUCCEEDED, f"{request.service} now active in {request.to_site}")
        rolled_back = bool(request.runbook.rollback) and await self._phase(run, "rollback", request.runbook.rollback)
        if run.aborted_by is not None:
            return RunResult.ABORTED, f"aborted by {run.aborted_by}" + ("; rolled back" if rolled_back else "")
        if rolled_back:
            return RunResult.ROLLED_BACK, "a step failed; rollback completed"
        return RunResult.FAILED, "a step failed" + ("; rollback failed too" if request.runbook.rollback else "")

    async def _phase(self, run: ActiveRun, phase: str, steps: list[Step]) -> bool:
        ok = True
        for step in steps:
            run.seq += 1
            run.step_name = step.name
            if await self._step(run, run.seq, phase, step):
                continue
            if step.on_failure == "abort":
                return False
            ok = True  # on_failure: continue
        return ok

    async def _step(self, run: ActiveRun, seq: int, phase: str, step: Step) -> bool:
        request = run.request
        variables = self._variables(run)
        rendered = render(step.spec.model_dump(mode="json", by_alias=True, exclude_none=True), variables)
        # `{{`/`}}` rendered to literal braces must not be read as templates again
        spec = type(step.spec).model_validate(rendered, context=RENDERED)
        if request.fence is not None and not request.dry_run:
            await request.fence.before_step(run.id, seq, phase, step.name)  # LostLock: the step never starts
        started = self.clock()
        outcome_word = "dry_run" if request.dry_run else "running"
        self.journal.step_started(StepRecord(
            run.id, seq, phase, step.name, step.kind, mask(rendered, self.secrets), started, None, 0, outcome_word, ""
        ), sync=False)  # on disk before the step runs: durable() below
        self._step_event(run, StepStarted(run.id, seq, step.name, step.kind, phase, mask(rendered, self.secrets)))
        if request.dry_run:
            self.journal.step_finished(run.id, seq, ended=started, attempts=0, outcome="dry_run", output="", sync=False)
            return True
        attempts, outcome, output, ok = 0, "", "", False
        try:
            await self.journal.durable()  # one fsync shared with the runs starting steps now, off the event loop
            attempts, result = await self._attempts(run, step, spec, variables)
            outcome, output, ok = "succeeded", f"{result.summary}\n{result.output}".strip(), True
        except StepError as exc:
            attempts = getattr(exc, "attempts", attempts)
            outcome, output = "failed", f"{exc}\n{exc.output}".strip()
        except asyncio.CancelledError:
            outcome, output = "aborted" if run.aborted_by else "interrupted", "cancelled"
            raise
        except (LostLock, JournalWriteError) as exc:  # a lost lock, or the step's start not on disk: it never ran
            outcome, output = ("interrupted", f"lost_lock: {exc}") if isinstance(exc, LostLock) else (
                "failed", f"not run: {exc}")
            raise
        except Exception as exc:  # a bug in a step kind fails the step (and is logged), never the daemon
            log.exception("step_crashed", run_id=run.id, step=step.name)
            outcome, output = "failed", f"internal error: {exc!r}"
        finally:
            if request.fence is not None:
                request.fence.after_step(run.id, seq, phase, step.name, outcome or "interrupted")
            ended = self.clock()
            self.journal.step_finished(run.id, seq, ended=ended, attempts=attempts, outcome=outcome or "interrupted",
                                       output=mask(output[:4096], self.secrets), sync=False)  # the next sync covers it
            self.stats.step_durations.setdefault(
                (request.service, request.runbook_name, step.name), Histogram(STEP_BUCKETS)
            ).observe(ended - started)
            self._step_event(run, StepFinished(run.id, seq, step.name, step.kind, phase, outcome,
                                               mask(output[:500], self.secrets)))
        return ok

    async def _attempts(
        self, run: ActiveRun, step: Step, spec: Any, variables: dict[str, str]
    ) -> tuple[int, StepOutcome]:
        kind = BY_NAME[step.kind].kind
        timeout = step.timeout or kind.default_timeout(spec)
        ctx = self._context(run, variables)
        ctx.process_started = lambda pgid, start: self.journal.step_process(run.id, run.seq, pgid, start)
        attempts = 0
        retrying = AsyncRetrying(
            stop=stop_after_attempt(step.retry.attempts),
            wait=wait_random_exponential(multiplier=step.retry.wait, max=step.retry.max_wait),
            retry=retry_if_exception(lambda exc: isinstance(exc, StepError) and exc.retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    try:
                        async with asyncio.timeout(timeout):
                            outcome = await under_lock(run.request.fence, kind.execute(spec, ctx))
                    except TimeoutError:
                        raise StepError(f"timeout after {timeout:g}s", retryable=kind.retry_timeouts) from None
                    if "verified_site" in ctx.extra:
                        run.verified_at = self.clock()
                        event = target_verified(run.verified_at, run.request.service, run.id, step.name, ctx.extra)
                        self.hooks.emit(event, run_id=run.id, site=event.site)
                    return attempts, outcome
        except StepError as exc:
            exc.attempts = attempts  # type: ignore[attr-defined]
            raise
        raise AssertionError("unreachable: tenacity either returns or reraises")

    def _context(self, run: ActiveRun, variables: dict[str, str]) -> StepContext:
        service = run.request.service
        return StepContext(
            service=service, run_id=run.id, variables=variables, http=self._http(),
            site_state=lambda site: self.hooks.site_state(service, site),
            wait_approval=lambda need, timeout: self._wait_approval(run, need, timeout),
            broker=self.broker,
        )

    async def _wait_approval(self, run: ActiveRun, need: ApprovalNeed, limit: float) -> str:
        run.approval = asyncio.get_running_loop().create_future()
        run.need, run.approvals = need, []
        run.waiting_step = need.prompt or run.step_name or f"step {run.seq}"
        self.journal.set_result(run.id, RunResult.WAITING_APPROVAL)
        self.hooks.emit(
            Event(EventKind.APPROVAL_WAITING, self.clock(), run.request.service, None,
                  f"run {run.id} waits for approval", ApprovalWaiting(run.id, run.waiting_step, limit)),
            run_id=run.id,
        )
        self.hooks.run_changed(run.request.service)
        try:
            async with asyncio.timeout(limit):
                return await run.approval
        except TimeoutError:
            raise StepError(f"no approval within {limit:g}s") from None
        finally:
            run.approval, run.need = None, None
            run.waiting_step = ""
            self.journal.set_result(run.id, RunResult.RUNNING)
            self.hooks.run_changed(run.request.service)

    def _variables(self, run: ActiveRun) -> dict[str, str]:
        request = run.request
        return {
            "service": request.service, "from_site": request.from_site, "to_site": request.to_site,
            "run_id": str(run.id), "trigger": request.trigger,
            "fence_token": str(request.fence.token if request.fence is not None else run.id),
            "plan": request.plan.plan if request.plan is not None else "",
            "plan_run": str(request.plan.run) if request.plan is not None else "",
        }

    def _step_event(self, run: ActiveRun, step: StepStarted | StepFinished) -> None:
        logged = {"outcome": step.outcome, "output": step.output} if isinstance(step, StepFinished) else {}
        kind = EventKind.STEP_FINISHED if isinstance(step, StepFinished) else EventKind.STEP_STARTED
        self.hooks.emit(
            Event(kind, self.clock(), run.request.service, None, f"run {run.id} step {step.seq} {step.step!r}", step),
            run_id=step.run_id, seq=step.seq, step=step.step, phase=step.phase, **logged,
        )

    def _finish(self, run: ActiveRun, result: RunResult, detail: str) -> None:
        request, now, succeeded = run.request, self.clock(), result is RunResult.SUCCEEDED
        verified = run.verified_at or (now if succeeded and self.hooks.site_state(
            request.service, request.to_site) is SiteState.UP else None)
        self.journal.finish(run.id, result, now, detail, verified if succeeded else None, sync=False)
        self.active.pop(request.service, None)
        label = _trigger(request.trigger, request.evidence)
        self.stats.runs[(request.service, request.runbook_name, label, str(result))] += 1
        self.stats.durations.setdefault((request.service, request.runbook_name), Histogram(DURATION_BUCKETS)).observe(
            now - run.started)
        if succeeded:
            self.stats.last_failover[request.service] = now
            if request.detected_at is not None and verified is not None:
                self.stats.total[request.service] = max(0.0, verified - request.detected_at)
            self.hooks.run_succeeded(request.service, request.to_site, run.id)
        self.hooks.emit(
            Event(EventKind.RUN_FINISHED, now, request.service, None, detail,
                  RunFinished(run.id, str(result), str(request.kind), request.to_site)),
            run_id=run.id, result=str(result), detail=detail,
        )
        self.hooks.run_changed(request.service)


def _trigger(trigger: str, evidence: Mapping[str, Any]) -> str:
    """The trigger label: `drill` for a drill's runs, a plan drill's moves (trigger `plan`) too (not declared:
    BcdDrillFailed's, not the runbook rule's), else `auto` or `operator`."""
    if evidence.get("drill"):
        return "drill"
    return trigger if trigger in ("auto", "drill") else TRIGGERS[1]
