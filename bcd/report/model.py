"""What a continuity report says, as typed values: computed once (bcd.report.compute), rendered as HTML, JSON or
Markdown (bcd.report.render_*). Times are Unix seconds; durations seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bcd.recoveries import Recovery

# the states time is counted in; `unobserved`: the daemon was not running
STATES = ("up", "degraded", "down", "flapping", "unknown", "maintenance", "unobserved")


@dataclass(frozen=True, slots=True)
class Period:
    start: float
    end: float  # the end asked for, or the report's time when that is later (the future is not observed)
    asked_end: float

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class Availability:
    """Seconds spent in each of STATES. Availability is `up` over the time observed: maintenance, unknown (not
    yet probed) and unobserved (the daemon not running) are shown apart and left out of both."""

    seconds: dict[str, float]

    @property
    def observed(self) -> float:
        return sum(v for k, v in self.seconds.items() if k not in ("maintenance", "unknown", "unobserved"))

    @property
    def ratio(self) -> float | None:
        """up / observed; None when nothing was observed."""
        observed = self.observed
        return None if observed <= 0 else self.seconds.get("up", 0.0) / observed

    def to_json(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "observed": self.observed,
                "seconds": {state: self.seconds.get(state, 0.0) for state in STATES}}


@dataclass(frozen=True, slots=True)
class SiteReport:
    site: str
    availability: Availability
    standby_seconds: float  # time observed while another site was active (`unknown` left out)
    standby_not_up: float  # of which not `up` (maintenance included: no failover could go there)

    @property
    def standby_not_up_ratio(self) -> float | None:
        return None if self.standby_seconds <= 0 else self.standby_not_up / self.standby_seconds


@dataclass(frozen=True, slots=True)
class Incident:
    """From the active site's first failure to the service served by an `up` site again."""

    start: float
    end: float | None  # None: still going at the period's end
    site: str
    worst: str  # the worst state the active site reached
    recovery: Recovery | None  # the run that ended it (None: the site came back by itself, or not yet)

    @property
    def seconds(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True, slots=True)
class Drill:
    """A drill of the service started in the period, from its `drill_started` and `drill_finished` events: its
    outcome is the drill's own (legs that all succeeded can still make a failed drill: not back on its origin),
    its runs the legs it moved the service with."""

    id: str
    kind: str  # round_trip | runbook
    started: float
    result: str | None  # succeeded, failed, aborted, interrupted; None: not ended (yet)
    ended: float | None
    reason: str  # why it ended so ("" while it has not)
    runs: tuple[Recovery, ...]

    @property
    def passed(self) -> bool:
        return self.result == "succeeded"

    @property
    def seconds(self) -> float | None:
        return None if self.ended is None else max(0.0, self.ended - self.started)

    def to_json(self) -> dict[str, Any]:
        return {"drill": self.id, "kind": self.kind, "started": self.started, "result": self.result,
                "ended": self.ended, "seconds": self.seconds, "reason": self.reason, "passed": self.passed,
                "runs": [run.to_json() for run in self.runs]}


@dataclass(frozen=True, slots=True)
class SiteLag:
    """One site's data lag in the period, from the journal's `data_lag` events (bcd.lag_journal)."""

    site: str
    worst: float | None  # seconds: the highest lag journaled in the period (or standing at its start)
    over_seconds: float  # how long it was over the RPO in the period (from the crossings)
    exceeded: bool  # it was over the RPO in the period


@dataclass(frozen=True, slots=True)
class LagFinding:
    """What the journal tells about data lag against the RPO."""

    rpo: float | None
    samples: bool  # False: the journal holds no data-lag events for the service (bcd.lag_journal)
    worst: float | None = None
    accepted: tuple[str, ...] = ()  # lags accepted by forced moves in the period (their journaled reasons)
    sites: tuple[SiteLag, ...] = ()  # the sites that measure a lag, worst first
    measured: bool = True  # False: no site of the service names a data_lag in the config

    @property
    def exceeded(self) -> tuple[SiteLag, ...]:
        return tuple(site for site in self.sites if site.exceeded)


@dataclass(frozen=True, slots=True)
class ServiceReport:
    name: str
    description: str
    rto: float | None
    rpo: float | None
    runbook: str | None
    availability: Availability
    sites: tuple[SiteReport, ...]
    incidents: tuple[Incident, ...]
    recoveries: tuple[Recovery, ...]  # failovers and failbacks in the period (drills apart)
    drills: tuple[Drill, ...]  # the service's drills started in the period, with their own outcome
    last_drill: float | None  # when the last drill that succeeded ended, in or before the period
    lag: LagFinding

    @property
    def rto_missed(self) -> tuple[Recovery, ...]:
        return tuple(r for r in self.recoveries if r.rto_met is False)


RISK_KINDS = {  # kind → what a manager reads in the summary's count
    "never_drilled": "never drilled successfully", "drill_overdue": "drill overdue", "no_runbook": "no runbook",
    "no_objective": "an objective missing", "standby_not_up": "standby not up > 1 %",
    "objective_missed": "objective missed", "lag_over_rpo": "data lag over RPO",
}


@dataclass(frozen=True, slots=True)
class Risk:
    service: str
    kind: str  # a key of RISK_KINDS
    text: str


@dataclass(frozen=True, slots=True)
class PlanDrill:
    """A drill of a recovery plan started in the period (bcd.drills.plan); listed for the report as a whole: its
    legs are not drills of the services it moved (nor do they count for their drill age)."""

    drill: str
    plan: str
    started: float
    result: str | None  # succeeded, failed, aborted, interrupted; None: not ended (yet)
    ended: float | None
    reason: str  # why it ended so ("" while it has not)

    @property
    def passed(self) -> bool:
        return self.result == "succeeded"

    def to_json(self) -> dict[str, object]:
        return {"drill": self.drill, "plan": self.plan, "started": self.started, "result": self.result,
                "ended": self.ended, "reason": self.reason, "passed": self.passed}


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The journal's hash chain as of the period's end: its last entry then, which `bcd journal verify` checks."""

    seq: int
    hash: str
    at: float


@dataclass(frozen=True, slots=True)
class Report:
    title: str
    instance: str
    generated: float
    period: Period
    services: tuple[ServiceReport, ...]
    risks: tuple[Risk, ...]
    chain: ChainHead | None
    drills_max_age: float
    notes: tuple[str, ...] = field(default=())
    plan_drills: tuple[PlanDrill, ...] = field(default=())

    def risk_counts(self) -> dict[str, int]:
        """How many risks of each kind (RISK_KINDS order), the kinds with none left out."""
        counts = {kind: sum(1 for risk in self.risks if risk.kind == kind) for kind in RISK_KINDS}
        return {kind: count for kind, count in counts.items() if count}

    @property
    def availability(self) -> Availability:
        """The estate's: every service's seconds added up."""
        total: dict[str, float] = {}
        for service in self.services:
            for state, value in service.availability.seconds.items():
                total[state] = total.get(state, 0.0) + value
        return Availability(total)
