"""What happened, as typed values: an `EventKind`, one frozen payload per kind, and the one JSON form.

The JSON form, used alike by the journal's `data` column (the payload alone), the API, SSE, MQTT and the
status page (envelope and payload together): the envelope's `id`, `kind`, `at`, `service`, `site`, `reason`
and, beside them, the payload's fields under their JSON names (`from`, `to`, …). No payload field is named
like an envelope field (a run's kind is `run_kind`, a step's `step_kind`), so nothing is renamed or lost.
An optional payload field (default None) is left out while it is None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol


class EventKind(StrEnum):
    """The `kind` of an event: equal to the string in the journal's `kind` column and on the wire."""

    SITE_TRANSITION = "site_transition"
    SITE_CHANGED_IN_MAINTENANCE = "site_changed_in_maintenance"
    SERVICE_STATUS = "service_status"
    ACTIVE_CHANGED = "active_changed"
    ACKNOWLEDGED = "acknowledged"
    MAINTENANCE_STARTED = "maintenance_started"
    MAINTENANCE_ENDED = "maintenance_ended"
    MAINTENANCE_EXTENDED = "maintenance_extended"
    MAINTENANCE_BOOKED = "maintenance_booked"  # a window booked for later (bcd.maintenance_calendar)
    MAINTENANCE_WINDOW_REFUSED = "maintenance_window_refused"  # a window that would leave a service no site
    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"
    APPROVAL_WAITING = "approval_waiting"
    APPROVAL_GIVEN = "approval_given"
    APPROVAL_REFUSED = "approval_refused"
    STEP_STARTED = "step_started"
    STEP_FINISHED = "step_finished"
    VIEWS_CHANGED = "views_changed"
    JOURNAL_GAP = "journal_gap"
    PLAN_STARTED = "plan_started"
    PLAN_GROUP_STARTED = "plan_group_started"
    PLAN_SERVICE_MOVED = "plan_service_moved"
    PLAN_GATE_WAITING = "plan_gate_waiting"
    PLAN_FINISHED = "plan_finished"
    SITE_LOST = "site_lost"
    SITE_RECOVERED = "site_recovered"
    TARGET_VERIFIED = "target_verified"
    DRILL_STARTED = "drill_started"  # a DR drill (bcd.drills): its legs are runs marked as the drill's
    DRILL_FINISHED = "drill_finished"
    DRILL_SKIPPED = "drill_skipped"  # a scheduled drill's occurrence that did not start, and why
    RUN_BOOKED = "run_booked"  # a failover, failback or plan run booked for a set time (bcd.booked_runs)
    BOOKING_CANCELLED = "booking_cancelled"  # a booked run or maintenance window cancelled before its time
    BOOKED_RUN_STARTED = "booked_run_started"
    BOOKED_RUN_REFUSED = "booked_run_refused"  # refused by a guard at its time, missed, or interrupted
    DATA_LAG = "data_lag"  # a site's data lag crossing its service's RPO, or its running maximum (bcd.lag_journal)


ENVELOPE = frozenset({"id", "kind", "at", "service", "site", "reason"})


# the JSON names of fields whose own names cannot be used (`from` is a Python keyword; `to` goes with it)
FROM: Mapping[str, str] = {"json": "from"}
TO: Mapping[str, str] = {"json": "to"}


@dataclass(frozen=True, slots=True)
class SiteTransition:
    from_state: str = field(metadata=FROM)
    to_state: str = field(metadata=TO)


@dataclass(frozen=True, slots=True)
class SiteChangedInMaintenance:
    effective: str


@dataclass(frozen=True, slots=True)
class ServiceStatusChanged:
    from_status: str = field(metadata=FROM)
    to_status: str = field(metadata=TO)
    active: str
    guard: str | None  # required: shown as null when nothing blocks


@dataclass(frozen=True, slots=True)
class ActiveChanged:
    from_site: str = field(metadata=FROM)
    to_site: str = field(metadata=TO)
    run_id: int | None = None  # None: adopted from the cluster, not made active by a run of this instance


@dataclass(frozen=True, slots=True)
class Acknowledged:
    runs: tuple[int, ...]
    by: str


@dataclass(frozen=True, slots=True)
class MaintenanceStarted:
    sites: tuple[str, ...]
    until: float
    by: str


@dataclass(frozen=True, slots=True)
class MaintenanceEnded:
    sites: tuple[str, ...]
    by: str


@dataclass(frozen=True, slots=True)
class MaintenanceExtended:
    until: float | None


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """`maintenance_booked` and `maintenance_window_refused`: the window's name, sites and times."""

    window: str
    sites: tuple[str, ...]
    start: float
    end: float
    by: str


@dataclass(frozen=True, slots=True)
class BookedRun:
    """The booked-run and booking events: the booking's id, what it books (`booked_kind`: failover, failback,
    plan or maintenance; `plan` for a plan), its time (`due`), who booked it, its state now, and what it started."""

    booking: str
    booked_kind: str
    due: float  # its time (epoch seconds)
    by: str
    state: str
    plan: str | None = None
    run_id: int | None = None
    plan_run: int | None = None


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: int
    run_kind: str
    runbook: str
    from_site: str = field(metadata=FROM)
    to_site: str = field(metadata=TO)
    trigger: str
    dry_run: bool
    forced: bool


@dataclass(frozen=True, slots=True)
class RunFinished:
    run_id: int
    result: str
    run_kind: str
    to_site: str | None = field(default=None, metadata=TO)  # None: interrupted by a restart (recovered)
    remote_run: str | None = None  # set on a run mirrored from another instance


@dataclass(frozen=True, slots=True)
class ApprovalWaiting:
    run_id: int
    step: str
    timeout: float


@dataclass(frozen=True, slots=True)
class ApprovalGiven:
    """`approval_given`: `by` approved (the envelope's reason says why); `approvals` of `needed` so far."""

    run_id: int
    step: str
    by: str
    approvals: tuple[str, ...]
    needed: int


@dataclass(frozen=True, slots=True)
class ApprovalRefused:
    """`approval_refused`: an approval by `by` was refused (the envelope's reason says why)."""

    run_id: int
    by: str


@dataclass(frozen=True, slots=True)
class StepStarted:
    run_id: int
    seq: int
    step: str
    step_kind: str
    phase: str
    inputs: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class StepFinished:
    run_id: int
    seq: int
    step: str
    step_kind: str
    phase: str
    outcome: str
    output: str


@dataclass(frozen=True, slots=True)
class RunNotStarted:
    """`views_changed`: an automatic run was not started, as the instances' views changed; deciding again."""

    run_kind: str
    to_site: str = field(metadata=TO)


@dataclass(frozen=True, slots=True)
class JournalGap:
    dropped: int
    first: float = field(metadata=FROM)
    last: float = field(metadata=TO)


@dataclass(frozen=True, slots=True)
class PlanStarted:
    plan: str
    plan_run: int
    from_site: str = field(metadata=FROM)
    to_site: str = field(metadata=TO)
    groups: int
    services: int


@dataclass(frozen=True, slots=True)
class PlanGroupStarted:
    plan: str
    plan_run: int
    group: int
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PlanServiceMoved:
    """A service of a plan run reached a state (moving, moved, failed, blocked, skipped, manual, done)."""

    plan: str
    plan_run: int
    state: str
    run_id: int | None = None


@dataclass(frozen=True, slots=True)
class PlanGateWaiting:
    plan: str
    plan_run: int
    after_group: int
    timeout: float


@dataclass(frozen=True, slots=True)
class PlanFinished:
    plan: str
    plan_run: int
    result: str


@dataclass(frozen=True, slots=True)
class SiteLost:
    """`site_lost` (the envelope's `site`): every service probed there is down (by quorum in a cluster)."""

    services: tuple[str, ...]
    plans: tuple[str, ...] = ()  # the recovery plans configured from this site


@dataclass(frozen=True, slots=True)
class SiteRecovered:
    services: tuple[str, ...]
    lost_since: float


@dataclass(frozen=True, slots=True)
class TargetVerified:
    """`target_verified` (the envelope's `site`): a run's step saw its target up; a recovery's `verified` point."""

    run_id: int
    step: str


@dataclass(frozen=True, slots=True)
class DrillStarted:
    drill: str  # the drill's id, in its runs' evidence
    drill_kind: str  # round_trip | runbook
    hold: float
    by: str
    from_site: str = field(metadata=FROM)
    to_site: str = field(metadata=TO)
    name: str | None = None  # the scheduled drill's name (`drills:`)
    occurrence: float | None = None  # the scheduled time it was started for
    plan: str | None = None  # a plan drill's recovery plan (drill_kind plan)


@dataclass(frozen=True, slots=True)
class DrillFinished:
    drill: str
    drill_kind: str
    result: str  # succeeded | failed | aborted
    runs: tuple[int, ...]
    name: str | None = None
    plan: str | None = None  # a plan drill's recovery plan (drill_kind plan)


@dataclass(frozen=True, slots=True)
class DrillSkipped:
    name: str
    occurrence: float
    drill_kind: str


@dataclass(frozen=True, slots=True)
class DataLag:
    """`crossing`: the lag went over the RPO (`over`) or back within it; `max`: the highest lag measured since
    `since` (at most one every few minutes, and only when it changed)."""

    sample: str  # crossing | max
    lag: float  # seconds
    over: bool  # the lag exceeds the RPO
    rpo: float | None = None
    since: float | None = None  # a `max`: the start of the stretch it covers


Payload = (
    SiteTransition | SiteChangedInMaintenance | ServiceStatusChanged | ActiveChanged | Acknowledged
    | MaintenanceStarted | MaintenanceEnded | MaintenanceExtended | RunStarted | RunFinished | ApprovalWaiting
    | ApprovalGiven | ApprovalRefused
    | MaintenanceWindow
    | StepStarted | StepFinished | RunNotStarted | JournalGap | PlanStarted | PlanGroupStarted | PlanServiceMoved
    | PlanGateWaiting | PlanFinished | SiteLost | SiteRecovered | TargetVerified | DrillStarted | DrillFinished
    | DrillSkipped
    | PlanGateWaiting | PlanFinished | SiteLost | SiteRecovered | TargetVerified | BookedRun | DataLag
)

PAYLOADS: dict[EventKind, type[Payload]] = {
    EventKind.SITE_TRANSITION: SiteTransition,
    EventKind.SITE_CHANGED_IN_MAINTENANCE: SiteChangedInMaintenance,
    EventKind.SERVICE_STATUS: ServiceStatusChanged,
    EventKind.ACTIVE_CHANGED: ActiveChanged,
    EventKind.ACKNOWLEDGED: Acknowledged,
    EventKind.MAINTENANCE_STARTED: MaintenanceStarted,
    EventKind.MAINTENANCE_ENDED: MaintenanceEnded,
    EventKind.MAINTENANCE_EXTENDED: MaintenanceExtended,
    EventKind.MAINTENANCE_BOOKED: MaintenanceWindow,
    EventKind.MAINTENANCE_WINDOW_REFUSED: MaintenanceWindow,
    EventKind.RUN_STARTED: RunStarted,
    EventKind.RUN_FINISHED: RunFinished,
    EventKind.APPROVAL_WAITING: ApprovalWaiting,
    EventKind.APPROVAL_GIVEN: ApprovalGiven,
    EventKind.APPROVAL_REFUSED: ApprovalRefused,
    EventKind.STEP_STARTED: StepStarted,
    EventKind.STEP_FINISHED: StepFinished,
    EventKind.VIEWS_CHANGED: RunNotStarted,
    EventKind.JOURNAL_GAP: JournalGap,
    EventKind.PLAN_STARTED: PlanStarted,
    EventKind.PLAN_GROUP_STARTED: PlanGroupStarted,
    EventKind.PLAN_SERVICE_MOVED: PlanServiceMoved,
    EventKind.PLAN_GATE_WAITING: PlanGateWaiting,
    EventKind.PLAN_FINISHED: PlanFinished,
    EventKind.SITE_LOST: SiteLost,
    EventKind.SITE_RECOVERED: SiteRecovered,
    EventKind.TARGET_VERIFIED: TargetVerified,
    EventKind.DRILL_STARTED: DrillStarted,
    EventKind.DRILL_FINISHED: DrillFinished,
    EventKind.DRILL_SKIPPED: DrillSkipped,
    EventKind.RUN_BOOKED: BookedRun,
    EventKind.BOOKING_CANCELLED: BookedRun,
    EventKind.BOOKED_RUN_STARTED: BookedRun,
    EventKind.BOOKED_RUN_REFUSED: BookedRun,
    EventKind.DATA_LAG: DataLag,
}

# Keys written under another name before, which journals keep: a run mirrored from another instance was
# journaled with `kind` (its run's kind, hidden by the event's own `kind` in the API and SSE).
_LEGACY_KEYS = {EventKind.RUN_FINISHED: {"kind": "run_kind"}}


# (attribute, JSON name, optional) of each field of each payload type
_LAYOUTS: dict[type[Payload], tuple[tuple[str, str, bool], ...]] = {
    cls: tuple((f.name, f.metadata.get("json", f.name), f.default is None) for f in fields(cls))
    for cls in PAYLOADS.values()
}


def payload_json(payload: Payload) -> dict[str, object]:
    """The payload's fields under their JSON names, optional ones left out while None."""
    out: dict[str, object] = {}
    for name, key, optional in _LAYOUTS[type(payload)]:
        value = getattr(payload, name)
        if value is None and optional:
            continue
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def payload_from_json(kind: EventKind, data: Mapping[str, object]) -> Payload:
    """The payload of a `kind` event from its JSON fields (unknown keys are ignored: an older journal may hold
    them). Raises ValueError when a required field is missing."""
    cls = PAYLOADS[kind]
    renamed = _LEGACY_KEYS.get(kind, {})
    data = {renamed.get(key, key): value for key, value in data.items()}
    values: dict[str, Any] = {}
    for name, key, optional in _LAYOUTS[cls]:
        if key in data:
            value = data[key]
            values[name] = tuple(value) if isinstance(value, list) else value
        elif not optional:
            raise ValueError(f"a {kind} event needs {key!r}; it has {sorted(data)}")
    return cls(**values)


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """What goes on the bus and into the journal: a transition, a status change, a decision, a run event."""

    kind: EventKind
    at: float
    service: str | None
    site: str | None
    reason: str
    data: Payload
    id: int | None

    def __init__(self, kind: EventKind | str, at: float, service: str | None, site: str | None, reason: str,  # noqa: PLR0917
                 data: Payload, id: int | None = None) -> None:
        """`kind` and `data` as an EventKind and its payload type (TypeError when they do not match; a kind's
        name as a string is taken, ValueError when no kind has it)."""
        kind = EventKind(kind)
        if type(data) is not PAYLOADS[kind]:
            raise TypeError(f"a {kind} event carries a {PAYLOADS[kind].__name__}, not a {type(data).__name__}")
        for name, value in (("kind", kind), ("at", at), ("service", service), ("site", site), ("reason", reason),
                            ("data", data), ("id", id)):
            object.__setattr__(self, name, value)

    def to_json(self) -> dict[str, object]:
        """The one JSON form (see the module docstring): for the API, SSE, MQTT and the status page."""
        return {**payload_json(self.data), "id": self.id, "kind": self.kind.value, "at": self.at,
                "service": self.service, "site": self.site, "reason": self.reason}

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Event:
        """The event `to_json` made. Raises ValueError (unknown kind, missing field) or TypeError."""
        kind = EventKind(str(obj["kind"]))
        payload = payload_from_json(kind, {key: value for key, value in obj.items() if key not in ENVELOPE})
        at, event_id = obj["at"], obj.get("id")
        if not isinstance(at, (int, float)) or not (event_id is None or isinstance(event_id, int)):
            raise TypeError(f"an event's at is a number and its id an integer or null: {at!r}, {event_id!r}")
        return cls(kind, float(at), _text(obj.get("service")), _text(obj.get("site")), str(obj["reason"]), payload,
                   event_id)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class Emit(Protocol):
    """The engine's emit: journal, publish and log an event; `log_fields` are more fields for its log line (they
    replace the event's own `reason` there too), and `warn=True` logs it at warning level (bcd.journal.writer)."""

    def __call__(self, event: Event, **log_fields: object) -> None: ...
