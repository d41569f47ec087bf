"""Value types shared across module boundaries: enums and frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Result(StrEnum):
    """Outcome of one probe run."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


class SiteState(StrEnum):
    """Health of one service in one site (HAProxy/Nagios semantics)."""

    UNKNOWN = "unknown"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    FLAPPING = "flapping"
    MAINTENANCE = "maintenance"


class ServiceStatus(StrEnum):
    """Status of a service across its sites."""

    UNKNOWN = "unknown"
    OK = "ok"
    AT_RISK = "at_risk"
    FAILOVER_NEEDED = "failover_needed"
    FAILOVER_PENDING = "failover_pending"
    FAILING_OVER = "failing_over"
    BLOCKED = "blocked"
    UNAVAILABLE = "unavailable"


class Guard(StrEnum):
    """Why a needed failover does not happen (each shows as `blocked` with this reason)."""

    STANDBY_NOT_UP = "standby_not_up"
    FLAPPING = "flapping"
    MAINTENANCE = "maintenance"
    COOLDOWN = "cooldown"
    RUN_IN_PROGRESS = "run_in_progress"
    RUN_FAILED = "run_failed"
    RUN_INTERRUPTED = "run_interrupted"
    NO_RUNBOOK = "no_runbook"
    NO_QUORUM = "no_quorum"
    COORDINATION_UNAVAILABLE = "coordination_unavailable"
    NO_EXECUTOR = "no_executor"
    JOURNAL_UNWRITABLE = "journal_unwritable"
    WAITING_FOR_DEPENDENCY = "waiting_for_dependency"  # failover_pending: a dependency moves first
    DEPENDENCY_FAILED = "dependency_failed"  # a dependency is blocked or unavailable
    RPO_EXCEEDED = "rpo_exceeded"  # the target's data lags more than the service's rpo, or its lag is unknown


class RunKind(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"


class RunResult(StrEnum):
    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    INTERRUPTED = "interrupted"
    DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What a probe returns: never raised, always a value."""

    result: Result
    latency: float
    reason: str
    cert_expiry: float | None = None
    perfdata: tuple[tuple[str, str], ...] = ()
    internal: str | None = None  # bcd could not run the check (EMFILE, ENOMEM, …): no evidence about the target


@dataclass(frozen=True, slots=True)
class ProbeKey:
    """Identity of one scheduled probe."""

    service: str
    site: str
    probe: str


@dataclass(frozen=True, slots=True)
class Observation:
    """A probe result stamped with who, where and when."""

    key: ProbeKey
    result: Result
    latency: float
    reason: str
    at: float
    vantage: str | None = None
    cert_expiry: float | None = None
    perfdata: tuple[tuple[str, str], ...] = ()
    internal: str | None = None  # as ProbeResult.internal: counted as bcd's own error, never seen by health
    early: str = ""  # why this run came before its schedule ("fast confirmation every 1s", a site re-probe)

    @property
    def ok(self) -> bool:
        return self.result is not Result.FAIL


# What the health machine makes of an observation, for the scheduler (`health.doubt`): plain ints, as they are
# returned for every probe run.
SETTLED = 0
"""Nothing in doubt: the probe keeps its normal spacing."""
HURRY = 1
"""The probe's site is in doubt because of it: run it again after its `fast_interval`."""
SUSPECT = 2
"""Added to HURRY on a probe's first failure while its site was not down: a reason to look at the site again."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of a site's health state, with the evidence."""

    service: str
    site: str
    from_state: SiteState
    to_state: SiteState
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class PlanRef:
    """The plan run a service's move belongs to: `{plan}` and `{plan_run}` in its runbook, trigger `plan`."""

    plan: str
    run: int
