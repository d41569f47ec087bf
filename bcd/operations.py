"""The one place that carries out an operator's or a machine's intent on the estate: failover, failback,
acknowledge, maintenance start and end, approve and abort; and recovery plans (run, resume, abort, done, approve
a gate), carried out by `bcd.plans` which moves each service through here like any other caller; and a reload
of the daemon's config (bcd.app does it).

Every surface (the HTTP API, the MQTT command reader, and the CLI through the API) finds out who is asking
in its own way (a token, a signing key), then hands a typed request naming `by` to `Operations.perform`, with
the `Actor` (role and scope) that asks, and turns the typed outcome into its own answer. All authorisation is
decided here: the actor's role (`bcd.authority.NEEDS`), its scope (the service's labels), and the four-eyes
rules of an approval step (no second approval by the same person; none by the initiator when the step says
`distinct_from_initiator`); a refused approval is journaled (`approval_refused`) with who and why.

The intents are typed values (bcd.intents), re-exported here with the outcomes.

`perform` never raises for a refusal: a role or scope that does not allow it, an unknown service, site or
run, a guard of the policy, a run not in the state asked for, or a journal that cannot be written each come
back as `Refused` with a kind (that the API maps to its status) and a readable reason.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from bcd.authority import TRUSTED, Action, Actor
from bcd.engine import Engine, RequestRefused
from bcd.events import ApprovalRefused, Event, EventKind
from bcd.intents import (
    Abort,
    AbortPlan,
    Acknowledge,
    Approve,
    ApproveGate,
    BookMaintenance,
    CancelBooking,
    Drill,
    DrillPlan,
    EndMaintenance,
    Intent,
    PlanDone,
    PlanIntent,
    Reload,
    ResumePlan,
    RunPlan,
    ServiceIntent,
    StartMaintenance,
    Transfer,
)
from bcd.journal import JournalWriteError
from bcd.model import RunKind
from bcd.outcomes import Accepted, Outcome, Refusal, Refused
from bcd.policy import Request
from bcd.runbooks.runner import RunConflict, RunRequest

# re-exported (bcd.outcomes, bcd.intents): the surfaces import them here
__all__ = [
    "Abort", "AbortPlan", "Accepted", "Acknowledge", "Approve", "ApproveGate", "BookMaintenance", "CancelBooking",
    "Drill", "DrillPlan", "EndMaintenance", "Intent", "Outcome", "PlanDone", "PlanIntent", "Refusal", "Refused",
    "Reload", "ResumePlan", "RunPlan", "ServiceIntent", "StartMaintenance", "Transfer"
]


class PlanControl(Protocol):
    """What carries out plan intents (bcd.plans.runner); it acts through an `Operations` of its own, without plans."""

    async def perform(self, intent: PlanIntent) -> Outcome: ...


ACTIONS: dict[type, Action] = {
    Transfer: Action.TRANSFER, Acknowledge: Action.ACKNOWLEDGE, StartMaintenance: Action.MAINTENANCE,
    EndMaintenance: Action.MAINTENANCE, Approve: Action.APPROVE, Abort: Action.ABORT,
    BookMaintenance: Action.MAINTENANCE, Drill: Action.TRANSFER,
}


class CalendarControl(Protocol):
    """What books maintenance windows (bcd.maintenance_calendar); it acts through an `Operations` of its own. It
    starts maintenance now on a cluster member (a window booked now, for every instance) and ends it anywhere (the
    booked windows in progress on those sites cut short first)."""

    async def perform(self, intent: BookMaintenance) -> Outcome: ...

    async def start_now(self, intent: StartMaintenance) -> Outcome: ...

    async def end_now(self, intent: EndMaintenance) -> Outcome: ...

    def listing(self) -> list[dict[str, Any]]: ...


class DrillControl(Protocol):
    """What carries out drills (bcd.drills); it acts through operations of its own."""

    async def perform(self, intent: Drill) -> Outcome: ...

    async def perform_plan(self, intent: DrillPlan, plans: PlanControl) -> Outcome: ...  # runs it through `plans`


class BookingControl(Protocol):
    """What books runs and cancels bookings (bcd.booked_runs). `target(id)` is the
    booking's (service or None for a plan, its action), or None when there is no such booking."""

    async def book(self, intent: Transfer | RunPlan) -> Outcome: ...

    async def cancel(self, intent: CancelBooking) -> Outcome: ...

    def target(self, booking: str) -> tuple[str | None, Action] | None: ...

    def listing(self, booking: str | None = None) -> list[dict[str, Any]]: ...


class ReloadControl(Protocol):
    """What reloads the config (bcd.app): the problems that kept the running one (none: reloaded); None while the
    daemon is starting or stopping."""

    async def __call__(self, by: str) -> list[str] | None: ...


class Operations:
    """Carries out intents against the engine, for the actor asking: `by` names who asked, as journaled.

    Plan intents go to `plans`, maintenance windows to `calendar`, drills to `drills`, booked runs to `bookings`.
    Each acts on services through operations of its own made without it (and built first: nothing is attached
    later), so a plan never starts a plan; without them those intents are refused as not started."""

    def __init__(self, engine: Engine, *, plans: PlanControl | None = None, calendar: CalendarControl | None = None,
                 drills: DrillControl | None = None, bookings: BookingControl | None = None,
                 reload: ReloadControl | None = None) -> None:
        self._engine = engine
        self._reload = reload
        self._plans = plans
        self._calendar = calendar
        self._drills = drills
        self._bookings = bookings

    def joined(self, *, plans: PlanControl | None = None, calendar: CalendarControl | None = None,
               drills: DrillControl | None = None, bookings: BookingControl | None = None) -> Operations:
        """These operations with more parts: for a part that acts through operations including itself (a drill
        schedule starts drills), made once the part exists."""
        return Operations(self._engine, plans=plans or self._plans, calendar=calendar or self._calendar,
                          drills=drills or self._drills, bookings=bookings or self._bookings, reload=self._reload)

    def bookings(self, booking: str | None = None) -> list[dict[str, Any]]:
        """The bookings (runs and maintenance windows) to come or in progress by time, then the latest over; or only
        the one named `booking` (none without bookings)."""
        return [] if self._bookings is None else self._bookings.listing(booking)

    def maintenance_windows(self) -> list[dict[str, Any]]:
        """Current and upcoming maintenance windows, by start (none without a calendar)."""
        return [] if self._calendar is None else self._calendar.listing()

    def run_end(self, run_id: int) -> asyncio.Future[None] | None:
        """A future done once run `run_id`, in progress here, has ended (its end journaled), straight from the
        runner rather than through the bus (whose group commit delays an announcement by up to 50 ms); None
        when it is not in progress here. Cancelling the future never touches the run."""
        runner = self._engine.runner
        run = runner.find(run_id) if runner is not None else None
        if run is None or run.task is None:
            return None
        end: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        run.task.add_done_callback(lambda _: None if end.done() else end.set_result(None))
        return end

    def drill_run(self, service: str, by: str, reason: str, drill: str, cleanup: bool = False) -> Outcome:
        """Start `service`'s drill runbook, then its cleanup (`cleanup`: that alone), as a run of drill `drill` from
        and to the active site (trigger, evidence `drill`). Refused mid-run, before the runner acts, on a cluster."""
        engine = self._engine
        name = engine.config.services[service].drill_runbook
        if engine.runner is None or not engine.acting or name is None:
            return Refused(Refusal.UNAVAILABLE, "the runner is not started" if name else f"{service}: no drill_runbook")
        if engine.cluster is not None:
            return Refused(Refusal.CONFLICT, "runbook drills are not carried out on a cluster member (use round_trip)")
        active, runbook = engine.services[service].active, engine.config.runbooks[name]
        try:
            engine.writable()
            run = engine.runner.start(RunRequest(
                service, name, runbook.model_copy(update={"steps": [], "rollback": []}) if cleanup else runbook,
                RunKind.FAILOVER, active, active, "drill", f"{by}: {reason}",
                evidence=engine.evidence(service) | {"drill": drill} | ({"drill_cleanup": True} if cleanup else {})))
        except (RunConflict, JournalWriteError) as exc:
            return Refused(Refusal.CONFLICT if isinstance(exc, RunConflict) else Refusal.UNAVAILABLE, str(exc))
        return Accepted(f"run {run.id}: drill runbook {name} of {service}", run=engine.runs.get(run.id))

    def unknown_service(self, name: str) -> Refused | None:
        """The refusal for a service that is not configured, or None."""
        if name in self._engine.services:
            return None
        return Refused(Refusal.NOT_FOUND, f"no service named {name!r}")

    @staticmethod
    def permitted(actor: Actor, action: Action) -> Refused | None:
        """The refusal (FORBIDDEN) when `actor`'s role may never do `action`, or None: what a surface may ask
        before it reads a request's body. `perform` asks it again, with the service's scope."""
        why = actor.refusal(action)
        return None if why is None else Refused(Refusal.FORBIDDEN, why)

    def out_of_scope(self, actor: Actor, service: str) -> Refused | None:
        """The refusal (FORBIDDEN) when `service` is outside `actor`'s scope, or None."""
        config = self._engine.config.services.get(service)
        why = actor.out_of_scope(service, {} if config is None else config.labels)
        return None if why is None else Refused(Refusal.FORBIDDEN, why)

    async def perform(self, intent: Intent, actor: Actor = TRUSTED) -> Outcome:
        """Carry out `intent` for `actor`: Accepted, or Refused with its kind and reason. While the journal
        cannot be written every action is refused (UNAVAILABLE) with the journal's reason."""
        try:
            return await self._perform(intent, actor)
        except JournalWriteError as exc:
            return Refused(Refusal.UNAVAILABLE, str(exc))

    async def _perform(self, intent: Intent, actor: Actor) -> Outcome:
        if isinstance(intent, RunPlan | ResumePlan | AbortPlan | PlanDone | ApproveGate | DrillPlan):
            return await self._plan(intent, actor)
        if isinstance(intent, CancelBooking):
            return await self._cancel(intent, actor)
        if isinstance(intent, Reload):  # the config of every service: an operator's, of no narrower scope
            forbidden = self.permitted(actor, Action.RELOAD) or self._scoped(actor, None, "a reload")
            return forbidden or await self._reloaded(intent)
        unknown = None if intent.service is None else self.unknown_service(intent.service)
        if unknown is not None:
            return unknown
        forbidden = self.permitted(actor, ACTIONS.get(type(intent), Action.TRANSFER))  # another intent: an operator's
        if forbidden is None and intent.service is not None:
            forbidden = self.out_of_scope(actor, intent.service)
        return forbidden or await self._act(intent, actor)

    async def _act(self, intent: ServiceIntent, actor: Actor) -> Outcome:
        """An intent on a known service, permitted: carried out by the engine, or by the part attached for it."""
        if isinstance(intent, Approve | Abort):
            return self._control(intent, actor)
        if isinstance(intent, BookMaintenance):
            return await self._book_window(intent)
        if isinstance(intent, Drill):
            if self._drills is None:
                return Refused(Refusal.UNAVAILABLE, "drills are not started")
            return await self._drills.perform(intent)
        if isinstance(intent, Transfer):
            return await self._transfer(intent)
        if isinstance(intent, Acknowledge):
            try:
                ids = self._engine.acknowledge(intent.service, intent.by, intent.reason)
            except RequestRefused as exc:  # a cluster witness: it takes no lock to share it with
                return Refused(Refusal.CONFLICT, str(exc), exc.verdict.guard)
            return Accepted(f"acknowledged runs {ids}" if ids else "nothing to acknowledge", runs=ids)
        if isinstance(intent, StartMaintenance) and self._calendar is not None and self._engine.cluster is not None:
            return await self._calendar.start_now(intent)
        if isinstance(intent, EndMaintenance) and self._calendar is not None:
            return await self._calendar.end_now(intent)
        try:
            if isinstance(intent, StartMaintenance):
                return self._start_maintenance(intent)
            sites = self._engine.end_maintenance(intent.service, intent.site, intent.by)
        except KeyError as exc:
            return Refused(Refusal.NOT_FOUND, str(exc.args[0]) if exc.args else "unknown site")
        return Accepted(f"maintenance ended for {', '.join(sites) or 'no site'}", sites=sites)

    async def _plan(self, intent: PlanIntent | DrillPlan, actor: Actor) -> Outcome:
        """A recovery plan's intent: an operator's (a gate's approval: an approver's), never a scoped token's (a
        plan moves services of every owner)."""
        forbidden = self.permitted(actor, Action.APPROVE if isinstance(intent, ApproveGate) else Action.TRANSFER)
        forbidden = forbidden or self._scoped(actor, None)
        if forbidden is not None:
            return forbidden
        if isinstance(intent, RunPlan) and intent.at is not None:
            return await self._book(intent)
        if self._plans is None:
            return Refused(Refusal.UNAVAILABLE, "recovery plans are not started")
        if isinstance(intent, DrillPlan):  # the drill runs the plan through these operations' plans
            return await self._drills.perform_plan(intent, self._plans) if self._drills else Refused(
                Refusal.UNAVAILABLE, "drills are not started")
        return await self._plans.perform(intent)

    async def _book_window(self, intent: BookMaintenance) -> Outcome:
        if self._calendar is None:
            return Refused(Refusal.UNAVAILABLE, "the maintenance calendar is not started")
        return await self._calendar.perform(intent)

    async def _book(self, intent: Transfer | RunPlan) -> Outcome:
        if self._bookings is None:
            return Refused(Refusal.UNAVAILABLE, "bookings are not started")
        return await self._bookings.book(intent)

    async def _cancel(self, intent: CancelBooking, actor: Actor) -> Outcome:
        """Cancelled by whoever may book what it books: the same role, the service in scope (a plan's: no scope)."""
        target = None if self._bookings is None else self._bookings.target(intent.booking)
        if self._bookings is None or target is None:
            return Refused(Refusal.NOT_FOUND, f"no booking {intent.booking!r}")
        service, action = target
        return self.permitted(actor, action) or self._scoped(actor, service) or await self._bookings.cancel(intent)

    def _scoped(self, actor: Actor, service: str | None, what: str = "a recovery plan") -> Refused | None:
        """The refusal when `service` (None: `what`, which acts on services of every owner) is outside `actor`'s
        scope, or None."""
        if service is not None:
            return self.out_of_scope(actor, service)
        if actor.scope is None:
            return None
        return Refused(Refusal.FORBIDDEN, f"{actor.name} may act only on services labelled {actor.scope}; "
                                          f"{what} acts on services of every owner")

    async def _reloaded(self, intent: Reload) -> Outcome:
        problems = None if self._reload is None else await self._reload(intent.by)
        if problems is None:
            return Refused(Refusal.UNAVAILABLE, "the daemon is starting or stopping: try again")
        if problems:
            return Refused(Refusal.INVALID, f"the config has {len(problems)} problem(s): the running config is kept",
                           problems=tuple(problems))
        return Accepted("config reloaded")

    async def _transfer(self, intent: Transfer) -> Outcome:
        """Through `engine.submit()`: on a cluster member it first takes the service's lock in etcd."""
        if intent.at is not None:
            return await self._book(intent)
        request = Request(intent.kind, intent.to, intent.force, intent.dry_run, intent.plan, intent.drill)
        try:
            run = await self._engine.submit(intent.service, request, intent.by, intent.reason)
        except RequestRefused as exc:
            return Refused(Refusal.CONFLICT, str(exc), exc.verdict.guard)
        record = self._engine.runs.get(run.id)
        assert record is not None
        detail = f"run {run.id}: {intent.kind} of {intent.service} to {run.request.to_site}"
        return Accepted(detail, run=record)

    def _start_maintenance(self, intent: StartMaintenance) -> Outcome:
        engine = self._engine
        sites = engine.start_maintenance(intent.service, intent.site, intent.duration, intent.reason, intent.by)
        until = max((engine.sites[(intent.service, s)].maintenance_until or 0.0) for s in sites)
        return Accepted(f"maintenance of {', '.join(sites)} for {intent.duration:g}s", sites=sites, until=until)

    def _control(self, intent: Approve | Abort, actor: Actor) -> Outcome:
        engine = self._engine
        record = engine.runs.get(intent.run)
        if record is None:
            return Refused(Refusal.NOT_FOUND, f"no run {intent.run}")
        if intent.service is not None and record.service != intent.service:
            return Refused(Refusal.CONFLICT, f"run {intent.run} belongs to {record.service}, not {intent.service}")
        forbidden = self.out_of_scope(actor, record.service)
        if forbidden is not None:
            return forbidden
        runner = engine.runner
        if runner is None or not engine.acting:
            return Refused(Refusal.UNAVAILABLE, "the runner is not started")
        if isinstance(intent, Approve):
            return self._approve(intent, record.service)
        if runner.abort(intent.run, intent.by):
            return Accepted(f"run {intent.run} aborted")
        return Refused(Refusal.CONFLICT, f"run {intent.run} is not in progress")

    def _approve(self, intent: Approve, service: str) -> Outcome:
        """Count an approval, unless the four-eyes rules of the step refuse it (journaled either way)."""
        engine = self._engine
        runner = engine.runner
        assert runner is not None
        engine.writable()  # the approved step could not be journaled: refused now rather than failed later
        run = runner.waiting(intent.run)
        if run is None or run.need is None:
            return Refused(Refusal.CONFLICT, f"run {intent.run} is not waiting for approval")
        why = None
        if intent.by in run.approvals:
            why = (f"{intent.by} has already approved run {intent.run}; step {run.waiting_step!r} needs "
                   f"{run.need.approvers} different approvers")
        elif run.need.distinct_from_initiator and intent.by == run.request.trigger:
            why = f"{intent.by} started run {intent.run}; step {run.waiting_step!r} needs an approval by someone else"
        if why is not None:
            engine.emit(Event(EventKind.APPROVAL_REFUSED, engine.clock(), service, None, why,
                              ApprovalRefused(intent.run, intent.by)), run_id=intent.run, by=intent.by)
            return Refused(Refusal.CONFLICT, why)
        runner.approve(intent.run, intent.by, intent.reason)
        missing = run.need.approvers - len(run.approvals)
        if missing > 0:
            return Accepted(f"run {intent.run} approved by {intent.by}; {missing} more approval(s) needed")
        return Accepted(f"run {intent.run} approved")
