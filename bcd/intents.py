"""The typed intents (what an operator or a machine asks of the estate), carried out by bcd.operations: each names
`by`, who asked, as journaled."""

from __future__ import annotations

from dataclasses import dataclass

from bcd.model import PlanRef, RunKind


@dataclass(frozen=True, slots=True)
class Transfer:
    """A failover or failback of `service`, to `to` or to the site the policy picks."""

    service: str
    kind: RunKind
    by: str
    reason: str
    to: str | None = None
    force: bool = False
    dry_run: bool = False
    plan: PlanRef | None = None  # a recovery plan's move (trigger `plan`, `{plan}` and `{plan_run}` filled in)
    drill: str | None = None  # a leg of this drill (bcd.drills): journaled as such, no cooldown
    at: float | None = None  # book it for then (epoch seconds; bcd.booked_runs) instead of starting it now


@dataclass(frozen=True, slots=True)
class Acknowledge:
    service: str
    by: str
    reason: str = "acknowledged"


@dataclass(frozen=True, slots=True)
class StartMaintenance:
    """Maintenance of one site of `service` (or all of them) for `duration` seconds."""

    service: str
    site: str | None
    duration: float
    by: str
    reason: str = "maintenance"


@dataclass(frozen=True, slots=True)
class BookMaintenance:
    """A maintenance window of one site of `service` (or all of them) from `start` (epoch seconds), booked in
    the calendar (bcd.maintenance_calendar); `force` books one leaving the service no site outside it."""

    service: str
    site: str | None
    start: float
    duration: float
    by: str
    reason: str = "maintenance"
    force: bool = False


@dataclass(frozen=True, slots=True)
class EndMaintenance:
    service: str
    site: str | None
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Approve:
    """Approve the step a run waits on; `service`, when given, must be the run's."""

    run: int
    by: str
    service: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Abort:
    run: int
    by: str
    service: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Start a run of recovery plan `plan` (or, `dry_run`, describe what it would do)."""

    plan: str
    by: str
    reason: str
    force: bool = False
    dry_run: bool = False
    at: float | None = None  # book it for then (epoch seconds; bcd.booked_runs) instead of starting it now
    drill: str | None = None  # a plan drill's (bcd.drills.plan): each move a leg of this drill, no cooldown


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """Go on with an interrupted plan run: the services not yet started."""

    run: int
    by: str


@dataclass(frozen=True, slots=True)
class AbortPlan:
    """Start no more moves of a plan run; `now`: abort the moves in progress too (with their rollback)."""

    run: int
    by: str
    now: bool = False


@dataclass(frozen=True, slots=True)
class PlanDone:
    """An operator moved `service` by hand (or settled its blocked move): the plan run counts it as done."""

    run: int
    service: str
    by: str


@dataclass(frozen=True, slots=True)
class ApproveGate:
    """Approve the gate a plan run waits at."""

    run: int
    by: str


@dataclass(frozen=True, slots=True)
class Drill:
    """Rehearse a recovery of `service` (bcd.drills): `round_trip` (to a standby and back, `hold` seconds
    between) or `runbook` (its drill runbook, then that runbook's cleanup); `name`: a scheduled drill's."""

    service: str
    by: str
    reason: str
    kind: str = "round_trip"
    hold: float = 0.0
    name: str | None = None
    occurrence: float | None = None  # the scheduled time a scheduled drill starts for


@dataclass(frozen=True, slots=True)
class DrillPlan:
    plan: str  # rehearse this recovery plan (bcd.drills.plan): run it as a drill, hold `hold` seconds, move back
    by: str
    reason: str
    hold: float = 0.0
    scheduled: tuple[str, float] | None = None  # a scheduled drill's name, and the occurrence it starts for


@dataclass(frozen=True, slots=True)
class CancelBooking:
    """Cancel a booked run or maintenance window (bcd.bookings) before its time."""

    booking: str
    by: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reload:
    """Load the config file again, as a SIGHUP does (bcd.app); one that cannot be loaded changes nothing: INVALID."""

    by: str


PlanIntent = RunPlan | ResumePlan | AbortPlan | PlanDone | ApproveGate
ServiceIntent = Transfer | Acknowledge | StartMaintenance | BookMaintenance | EndMaintenance | Approve | Abort | Drill
Intent = ServiceIntent | PlanIntent | CancelBooking | DrillPlan | Reload
