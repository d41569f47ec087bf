"""The pure decision policy: a table of situations → status, guard, action and reason; a table of operator
requests → verdicts; and a hypothesis state machine that drives random site states, runs, acks, time and
operator requests through `decide()` / `check_request()` and checks the non-negotiables after every step."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bcd import health
from bcd.health import SiteHealth
from bcd.impact import Dependency
from bcd.model import Guard, RunKind, ServiceStatus, SiteState
from bcd.policy import (
    Action,
    Decision,
    Request,
    RunInfo,
    Snapshot,
    TransferMode,
    TransferRule,
    Verdict,
    check_request,
    decide,
    up_standbys,
)
from bcd.rpo import Lag

NOW = 1_000_000.0
UNKNOWN, UP, DEGRADED, DOWN = SiteState.UNKNOWN, SiteState.UP, SiteState.DEGRADED, SiteState.DOWN
FLAPPING, MAINTENANCE = SiteState.FLAPPING, SiteState.MAINTENANCE
FAILOVER, FAILBACK = RunKind.FAILOVER, RunKind.FAILBACK
REASONS = {
    UNKNOWN: "no observation yet", UP: "all probes passing", DEGRADED: "health failing (1 of 2): HTTP 503",
    DOWN: "2 consecutive failures of health: HTTP 503",
}


def site(name: str, state: SiteState, *, base: SiteState | None = None, since: float = NOW - 100) -> SiteHealth:
    """A site in `state`; flapping and maintenance sit on `base` (down and up by default)."""
    if state is FLAPPING:
        under = base or DOWN
        return SiteHealth("payroll", name, under, flapping=True, since=since, reason="flapping")
    if state is MAINTENANCE:
        under = base or UP
        return SiteHealth("payroll", name, under, maintenance_until=NOW + 3600, maintenance_reason="patching",
                          since=since, reason=REASONS[under])
    return SiteHealth("payroll", name, state, since=since, reason=REASONS[state])


def transfer_rule(mode: str = "auto", cooldown: float = 1800.0, runbook: str = "move") -> TransferRule:
    return TransferRule(runbook, TransferMode(mode), cooldown)


def snap(*states: SiteState, names: tuple[str, ...] = ("dorset", "hampshire", "kent"), **fields: Any) -> Snapshot:
    """Sites in `names` order with `states` (dorset active and home unless said otherwise)."""
    sites = {name: state if isinstance(state, SiteHealth) else site(name, state)
             for name, state in zip(names, states, strict=False)}
    values: dict[str, Any] = {"service": "payroll", "active": "dorset", "home": "dorset", "sites": sites,
                              "failover": transfer_rule(), **fields}
    return Snapshot(**values)


RUN = RunInfo("12", FAILOVER, "hampshire")
WAITING = RunInfo("12", FAILOVER, "hampshire", waiting_approval=True, step="switch DNS?")

DECISIONS = [
    # (id, snapshot, status, guard, action, words in the reason)
    ("both up", snap(UP, UP), ServiceStatus.OK, None, None, "payroll: active site dorset up"),
    ("active degraded", snap(DEGRADED, UP), ServiceStatus.AT_RISK, None, None, "active site dorset degraded"),
    ("active unknown", snap(UNKNOWN, UP), ServiceStatus.UNKNOWN, None, None, "active site dorset unknown"),
    ("active flapping never fails over", snap(FLAPPING, UP), ServiceStatus.AT_RISK, None, None, "dorset flapping"),
    ("active down, standby down (flapping no)", snap(DOWN, DOWN), ServiceStatus.UNAVAILABLE, None, None,
     "payroll: no site up: dorset down, hampshire down"),
    ("auto fails over", snap(DOWN, UP), ServiceStatus.FAILING_OVER, None, Action(FAILOVER, "hampshire"),
     "starting failover to hampshire: active dorset down (2 consecutive failures of health: HTTP 503)"),
    ("manual waits for an operator", snap(DOWN, UP, failover=transfer_rule("manual")), ServiceStatus.FAILOVER_PENDING,
     None, None, "failover to hampshire waits for an operator"),
    ("dry-run mode: one dry run", snap(DOWN, UP, failover=transfer_rule("dry-run")), ServiceStatus.FAILOVER_PENDING, None,
     Action(FAILOVER, "hampshire", dry_run=True), "dry run of failover to hampshire"),
    ("dry-run mode: then waits", snap(DOWN, UP, failover=transfer_rule("dry-run"), down_since=NOW - 100,
                                      dry_run_since=NOW - 50),
     ServiceStatus.FAILOVER_PENDING, None, None, "waits for an operator"),
    ("dry-run mode: a new episode gets a new dry run",
     snap(DOWN, UP, failover=transfer_rule("dry-run"), down_since=NOW - 100, dry_run_since=NOW - 500),
     ServiceStatus.FAILOVER_PENDING, None, Action(FAILOVER, "hampshire", dry_run=True), "dry run"),
    ("no runbook: bcd only says so", snap(DOWN, UP, failover=None), ServiceStatus.FAILOVER_NEEDED, None, None,
     "payroll: active dorset down (2 consecutive failures of health: HTTP 503); standby hampshire up"),
    ("standby degraded", snap(DOWN, DEGRADED), ServiceStatus.BLOCKED, Guard.STANDBY_NOT_UP, None,
     "failover blocked: active dorset down (2 consecutive failures of health: HTTP 503); "
     "no standby up (hampshire degraded)"),
    ("standby unknown", snap(DOWN, UNKNOWN), ServiceStatus.BLOCKED, Guard.STANDBY_NOT_UP, None,
     "no standby up (hampshire unknown)"),
    ("standby flapping", snap(DOWN, FLAPPING), ServiceStatus.BLOCKED, Guard.FLAPPING, None,
     "no standby up (hampshire flapping)"),
    ("standby flapping though its base is up", snap(DOWN, site("hampshire", FLAPPING, base=UP)),
     ServiceStatus.BLOCKED, Guard.FLAPPING, None, "hampshire flapping"),
    ("standby in maintenance", snap(DOWN, MAINTENANCE), ServiceStatus.BLOCKED, Guard.MAINTENANCE, None,
     "failover blocked (site hampshire in maintenance)"),
    ("active in maintenance", snap(site("dorset", MAINTENANCE, base=DOWN), UP), ServiceStatus.BLOCKED,
     Guard.MAINTENANCE, None, "failover blocked (site dorset in maintenance)"),
    ("service in maintenance", snap(DOWN, UP, maintenance_until=NOW + 60), ServiceStatus.BLOCKED,
     Guard.MAINTENANCE, None, "failover blocked (service in maintenance)"),
    ("service maintenance over", snap(DOWN, UP, maintenance_until=NOW), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "starting failover"),
    ("cooldown", snap(DOWN, UP, last_run_ended=NOW - 60), ServiceStatus.BLOCKED, Guard.COOLDOWN, None,
     "failover blocked (cooldown, 1740s left)"),
    ("cooldown over", snap(DOWN, UP, last_run_ended=NOW - 1800), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "starting failover"),
    ("cooldown does not hold a manual decision", snap(DOWN, UP, failover=transfer_rule("manual"), last_run_ended=NOW - 60),
     ServiceStatus.FAILOVER_PENDING, None, None, "waits for an operator"),
    ("run in progress", snap(DOWN, UP, running=RUN), ServiceStatus.FAILING_OVER, Guard.RUN_IN_PROGRESS, None,
     "payroll: run 12 (failover to hampshire) in progress"),
    ("a drill runbook in progress", snap(UP, UP, running=RunInfo("12", FAILOVER, "dorset", drill="runbook")),
     ServiceStatus.FAILING_OVER, Guard.RUN_IN_PROGRESS, None, "payroll: run 12 (drill runbook at dorset) in progress"),
    ("a drill leg in progress", snap(UP, UP, running=RunInfo("12", FAILOVER, "hampshire", drill="round_trip")),
     ServiceStatus.FAILING_OVER, Guard.RUN_IN_PROGRESS, None,
     "payroll: run 12 (drill leg: failover to hampshire) in progress"),
    ("run waits for approval", snap(DOWN, UP, running=WAITING), ServiceStatus.FAILOVER_PENDING,
     Guard.RUN_IN_PROGRESS, None, "run 12 (failover to hampshire) waits for approval of step 'switch DNS?'"),
    ("run in progress beats everything", snap(DOWN, DOWN, running=RUN, unacknowledged=("11", Guard.RUN_FAILED)),
     ServiceStatus.FAILING_OVER, Guard.RUN_IN_PROGRESS, None, "in progress"),
    ("failed run unacknowledged", snap(DOWN, UP, unacknowledged=("11", Guard.RUN_FAILED)), ServiceStatus.BLOCKED,
     Guard.RUN_FAILED, None, "payroll: run 11 failed; acknowledge to re-arm"),
    ("interrupted run unacknowledged", snap(UP, UP, unacknowledged=("11", Guard.RUN_INTERRUPTED)),
     ServiceStatus.BLOCKED, Guard.RUN_INTERRUPTED, None, "payroll: run 11 was interrupted; acknowledge to re-arm"),
    ("three sites: the up one", snap(DOWN, DOWN, UP), ServiceStatus.FAILING_OVER, None, Action(FAILOVER, "kent"),
     "standby kent up"),
    ("three sites: first up standby in config order", snap(DOWN, UP, UP), ServiceStatus.FAILING_OVER, None,
     Action(FAILOVER, "hampshire"), "starting failover to hampshire"),
    ("three sites: one not down is not unavailable", snap(DOWN, DEGRADED, DOWN), ServiceStatus.BLOCKED,
     Guard.STANDBY_NOT_UP, None, "no standby up (hampshire degraded, kent down)"),
    ("three sites: all down", snap(DOWN, DOWN, DOWN), ServiceStatus.UNAVAILABLE, None, None,
     "no site up: dorset down, hampshire down, kent down"),
    ("three sites: a standby in maintenance is passed over", snap(DOWN, MAINTENANCE, UP),
     ServiceStatus.FAILING_OVER, None, Action(FAILOVER, "kent"), "starting failover to kent"),
    ("auto failback once home is up", snap(UP, UP, active="hampshire", failback=transfer_rule()), ServiceStatus.FAILING_OVER,
     None, Action(FAILBACK, "dorset"), "payroll: starting failback to home site dorset (up again)"),
    ("no failback while home is down", snap(DOWN, UP, active="hampshire", failback=transfer_rule()), ServiceStatus.OK, None,
     None, "active site hampshire up"),
    ("no failback while home is flapping", snap(site("dorset", FLAPPING, base=UP), UP, active="hampshire",
                                               failback=transfer_rule()), ServiceStatus.OK, None, None, "hampshire up"),
    ("manual failback is an operator's", snap(UP, UP, active="hampshire", failback=transfer_rule("manual")),
     ServiceStatus.OK, None, None, "hampshire up"),
    ("no failback in cooldown", snap(UP, UP, active="hampshire", failback=transfer_rule(), last_run_ended=NOW - 60),
     ServiceStatus.OK, None, None, "hampshire up"),
    ("no failback to a home in maintenance", snap(MAINTENANCE, UP, active="hampshire", failback=transfer_rule()),
     ServiceStatus.OK, None, None, "hampshire up"),
    ("no failback while the away site is degraded", snap(UP, DEGRADED, active="hampshire", failback=transfer_rule()),
     ServiceStatus.AT_RISK, None, None, "active site hampshire degraded"),
    ("single site down", snap(DOWN, names=("dorset",)), ServiceStatus.UNAVAILABLE, None, None,
     "no site up: dorset down"),
]


@pytest.mark.parametrize(
    ("snapshot", "status", "guard", "action", "reason"), [case[1:] for case in DECISIONS], ids=[c[0] for c in DECISIONS]
)
def test_decide(snapshot: Snapshot, status: ServiceStatus, guard: Guard | None, action: Action | None,
                reason: str) -> None:
    decision = decide(snapshot, NOW)
    assert (decision.status, decision.guard, decision.action) == (status, guard, action)
    assert reason in decision.reason
    assert decision.reason.startswith("payroll: ")


def test_up_standbys_prefers_sites_not_in_maintenance() -> None:
    assert up_standbys(snap(DOWN, MAINTENANCE, UP)) == ["kent", "hampshire"]
    assert up_standbys(snap(DOWN, UP, UP)) == ["hampshire", "kent"]
    assert up_standbys(snap(DOWN, DEGRADED, FLAPPING)) == []


REQUESTS = [
    # (id, snapshot, request, to_site, guard, conflict, words in the reason)
    ("failover to the up standby", snap(DOWN, UP), Request(FAILOVER), "hampshire", None, False,
     "failover to hampshire"),
    ("planned failover while all is well", snap(UP, UP), Request(FAILOVER), "hampshire", None, False,
     "failover to hampshire"),
    ("a chosen target", snap(DOWN, UP, UP), Request(FAILOVER, "kent"), "kent", None, False, "failover to kent"),
    ("run in progress: 409 even forced", snap(DOWN, UP, running=RUN), Request(FAILOVER, force=True), None,
     Guard.RUN_IN_PROGRESS, True, "run 12 of payroll is in progress"),
    ("unacknowledged failure first", snap(DOWN, UP, unacknowledged=("11", Guard.RUN_FAILED)), Request(FAILOVER),
     None, Guard.RUN_FAILED, False, "run 11 of payroll needs acknowledging first (bcd ack)"),
    ("unacknowledged interruption, even forced", snap(DOWN, UP, unacknowledged=("11", Guard.RUN_INTERRUPTED)),
     Request(FAILOVER, force=True), None, Guard.RUN_INTERRUPTED, False, "needs acknowledging"),
    ("no standby up", snap(DOWN, DOWN), Request(FAILOVER), None, Guard.STANDBY_NOT_UP, False,
     "no standby of payroll is up"),
    ("no standby up, forced", snap(DOWN, DOWN), Request(FAILOVER, force=True), "hampshire", None, False,
     "forced failover to hampshire"),
    ("target degraded", snap(DOWN, DEGRADED, UP), Request(FAILOVER, "hampshire"), None, Guard.STANDBY_NOT_UP, False,
     "target hampshire is degraded, not up (use force)"),
    ("target flapping", snap(DOWN, FLAPPING), Request(FAILOVER, "hampshire"), None, Guard.STANDBY_NOT_UP, False,
     "target hampshire is flapping, not up (use force)"),
    ("target degraded, forced", snap(DOWN, DEGRADED), Request(FAILOVER, "hampshire", force=True), "hampshire", None,
     False, "forced failover to hampshire"),
    ("to the active site", snap(DOWN, UP), Request(FAILOVER, "dorset"), None, Guard.STANDBY_NOT_UP, False,
     "dorset is already the active site of payroll"),
    ("to a site it does not have", snap(DOWN, UP), Request(FAILOVER, "mars"), None, Guard.STANDBY_NOT_UP, False,
     "payroll has no site 'mars'"),
    ("cooldown", snap(DOWN, UP, last_run_ended=NOW - 60), Request(FAILOVER), None, Guard.COOLDOWN, False,
     "cooldown: 1740s left (use force)"),
    ("cooldown in manual mode too", snap(DOWN, UP, failover=transfer_rule("manual"), last_run_ended=NOW - 60),
     Request(FAILOVER), None, Guard.COOLDOWN, False, "cooldown"),
    ("cooldown, forced", snap(DOWN, UP, last_run_ended=NOW - 60), Request(FAILOVER, force=True), "hampshire", None,
     False, "forced failover"),
    ("no failover runbook", snap(DOWN, UP, failover=None), Request(FAILOVER), None, Guard.NO_RUNBOOK, False,
     "payroll has no failover runbook"),
    ("failback home", snap(UP, UP, active="hampshire", failback=transfer_rule("manual")), Request(FAILBACK), "dorset", None,
     False, "failback to dorset"),
    ("failback at home already", snap(UP, UP, failback=transfer_rule("manual")), Request(FAILBACK), None,
     Guard.STANDBY_NOT_UP, False, "payroll is already on its home site dorset"),
    ("failback without a runbook", snap(UP, UP, active="hampshire"), Request(FAILBACK), None, Guard.NO_RUNBOOK,
     False, "payroll has no failback runbook"),
    ("failback to a home that is down", snap(DOWN, UP, active="hampshire", failback=transfer_rule("manual")),
     Request(FAILBACK), None, Guard.STANDBY_NOT_UP, False, "target dorset is down, not up (use force)"),
    ("failback in cooldown", snap(UP, UP, active="hampshire", failback=transfer_rule("manual"), last_run_ended=NOW - 10),
     Request(FAILBACK), None, Guard.COOLDOWN, False, "cooldown: 1790s left (use force)"),
    ("failback in cooldown, forced", snap(UP, UP, active="hampshire", failback=transfer_rule("manual"),
                                          last_run_ended=NOW - 10),
     Request(FAILBACK, force=True), "dorset", None, False, "forced failback to dorset"),
]


@pytest.mark.parametrize(
    ("snapshot", "request_", "to_site", "guard", "conflict", "reason"), [case[1:] for case in REQUESTS],
    ids=[c[0] for c in REQUESTS],
)
def test_check_request(snapshot: Snapshot, request_: Request, to_site: str | None, guard: Guard | None,
                       conflict: bool, reason: str) -> None:
    verdict = check_request(snapshot, request_, NOW)
    assert (verdict.to_site, verdict.guard, verdict.conflict) == (to_site, guard, conflict)
    assert reason in verdict.reason


def test_decide_reads_no_clock_and_keeps_no_state() -> None:
    snapshot = snap(DOWN, UP, last_run_ended=NOW - 60)
    assert decide(snapshot, NOW) == decide(snapshot, NOW)
    assert decide(snapshot, NOW).guard is Guard.COOLDOWN
    assert decide(snapshot, NOW + 1740).action == Action(FAILOVER, "hampshire")  # only `now` moved


# ---------------------------------------------------------------------------------------------------------
# The state machine: the policy driven like the engine drives it, with a model of the runner

SITES = ("dorset", "hampshire", "kent")
# up and down weigh double: the interesting situations need several sites up or down at once
SHOWN = (UNKNOWN, UP, UP, DEGRADED, DOWN, DOWN, FLAPPING, MAINTENANCE)
BASES = (UNKNOWN, UP, UP, DEGRADED, DOWN, DOWN)


@dataclass(frozen=True)
class ModelRun:
    info: RunInfo
    dry_run: bool
    forced: bool
    automatic: bool


class PolicyMachine(RuleBasedStateMachine):
    """One service over three sites. Automatic actions are taken only when `decide()` returns one, operator
    runs only when `check_request()` allows one; the runner's lock is *not* modelled as a second check:
    starting a run while one is in progress fails the test."""

    def __init__(self) -> None:
        super().__init__()
        self.now = NOW
        self.sites = {name: SiteHealth.new("payroll", name, NOW) for name in SITES}
        self.active = "dorset"
        self.running: ModelRun | None = None
        self.unacknowledged: tuple[str, Guard] | None = None
        self.last_run_ended: float | None = None
        self.maintenance_until: float | None = None
        self.dry_run_since: float | None = None
        self.runs = 0
        self.failover: TransferRule | None = None
        self.failback: TransferRule | None = None
        self.rpo: float | None = None
        self.lags: dict[str, Lag] = {}

    @initialize(
        failover=st.sampled_from(["auto", "auto", "manual", "dry-run", None]),
        failback=st.sampled_from(["auto", "manual", None]),
        cooldown=st.sampled_from([0.0, 30.0, 600.0]),
        rpo=st.sampled_from([None, 60.0]),
    )
    def configure(self, failover: str | None, failback: str | None, cooldown: float, rpo: float | None) -> None:
        self.failover = transfer_rule(failover, cooldown) if failover else None
        self.failback = transfer_rule(failback, cooldown, "back") if failback else None
        self.rpo = rpo

    # -- the world ---------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return Snapshot(
            service="payroll", active=self.active, home="dorset", sites=dict(self.sites),
            failover=self.failover, failback=self.failback,
            running=self.running.info if self.running else None, unacknowledged=self.unacknowledged,
            last_run_ended=self.last_run_ended, maintenance_until=self.maintenance_until,
            dry_run_since=self.dry_run_since, down_since=self.sites[self.active].since,
            rpo=self.rpo, lags=dict(self.lags),
        )

    @rule(name=st.sampled_from(SITES), value=st.sampled_from([None, 1.0, 60.0, 600.0]))
    def lag_measured(self, name: str, value: float | None) -> None:
        """A site's data lag is measured now (None: its probe reported no number); it counts for 20 s."""
        self.lags[name] = Lag("probe replica, value lag", 20.0, value, self.now if value is not None else None)

    @rule(name=st.sampled_from(SITES), shown=st.sampled_from(SHOWN), base=st.sampled_from(BASES),
          hours=st.integers(1, 4))
    def site_changes(self, name: str, shown: SiteState, base: SiteState, hours: int) -> None:
        self.set_site(name, shown, base, hours)

    @rule(shown=st.tuples(*[st.sampled_from(SHOWN)] * len(SITES)), base=st.sampled_from((UP, DOWN)))
    def estate_changes(self, shown: tuple[SiteState, ...], base: SiteState) -> None:
        """Every site changes at once (e.g. a network partition heals)."""
        for name, state in zip(SITES, shown, strict=True):
            self.set_site(name, state, base, 1)

    def set_site(self, name: str, shown: SiteState, base: SiteState, hours: int) -> None:
        old = self.sites[name]
        if shown is FLAPPING:
            new = replace(old, base=base, flapping=True)
        elif shown is MAINTENANCE:
            new = replace(old, base=base, maintenance_until=self.now + hours * 3600, maintenance_reason="work")
        else:
            new = replace(old, base=shown, flapping=False, maintenance_until=None)
        if new.state is not old.state:  # `since` is the time of the last change of the shown state
            new = replace(new, since=self.now, reason=f"now {new.state}")
        self.sites[name] = new

    @rule(seconds=st.sampled_from([1.0, 20.0, 300.0, 3600.0, 4 * 3600.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        for name, current in self.sites.items():  # the engine's tick: maintenance windows expire
            self.sites[name], _ = health.tick(current, self.now)

    @rule(minutes=st.sampled_from([None, 10, 600]))
    def service_maintenance(self, minutes: int | None) -> None:
        self.maintenance_until = None if minutes is None else self.now + minutes * 60

    # -- the engine: decide, and carry out what was decided --------------------------------------------
    @rule()
    def engine_decides(self) -> None:
        decision = decide(self.snapshot(), self.now)
        if decision.action is not None:
            self.start(decision.action.kind, decision.action.to_site, dry_run=decision.action.dry_run,
                       forced=False, automatic=True)

    @rule(kind=st.sampled_from([FAILOVER, FAILBACK]), to=st.sampled_from([None, *SITES]), force=st.booleans(),
          dry_run=st.booleans())
    def operator_requests(self, kind: RunKind, to: str | None, force: bool, dry_run: bool) -> None:
        snapshot = self.snapshot()
        verdict = check_request(snapshot, Request(kind, to, force, dry_run), self.now)
        self.check_verdict(snapshot, kind, to, force, verdict)
        if verdict.to_site is not None:
            self.start(kind, verdict.to_site, dry_run=dry_run, forced=force, automatic=False)

    def start(self, kind: RunKind, to_site: str, *, dry_run: bool, forced: bool, automatic: bool) -> None:
        assert self.running is None, f"a second run of payroll while {self.running} is in progress"
        self.runs += 1
        self.running = ModelRun(RunInfo(str(self.runs), kind, to_site), dry_run, forced, automatic)
        if dry_run and automatic:
            self.dry_run_since = self.now

    @precondition(lambda self: self.running is not None and not self.running.dry_run)
    @rule()
    def run_waits_for_approval(self) -> None:
        assert self.running is not None
        self.running = replace(self.running, info=replace(self.running.info, waiting_approval=True, step="ok?"))

    @precondition(lambda self: self.running is not None)
    @rule(result=st.sampled_from(["succeeded", "failed", "aborted", "rolled_back", "interrupted"]))
    def run_ends(self, result: str) -> None:
        run = self.running
        assert run is not None
        self.running = None
        if run.dry_run:  # a dry run changes nothing and always "succeeds" as dry_run
            return
        if result == "succeeded":
            self.active = run.info.to_site
            self.last_run_ended = self.now
        elif result == "interrupted":
            self.unacknowledged = (run.info.id, Guard.RUN_INTERRUPTED)
        else:
            self.unacknowledged = (run.info.id, Guard.RUN_FAILED)

    @rule()
    def operator_acknowledges(self) -> None:
        self.unacknowledged = None

    # -- what must always hold -----------------------------------------------------------------------------
    def guard_holds(self, target: str, transfer: TransferRule) -> str | None:
        """Independently of the policy's code: which guard forbids an automatic move to `target` now."""
        if self.unacknowledged is not None:
            return "unacknowledged run"
        if self.maintenance_until is not None and self.maintenance_until > self.now:
            return "service maintenance"
        if MAINTENANCE in (self.sites[self.active].state, self.sites[target].state):
            return "site maintenance"
        if self.last_run_ended is not None and self.now - self.last_run_ended < transfer.cooldown:
            return "cooldown"
        if self.sites[target].effective is not UP:
            return f"target {self.sites[target].effective}"
        return self.data_lag_holds(target)

    def data_lag_holds(self, target: str) -> str | None:
        """Whether the target's data lags beyond the rpo, or its lag is unknown (not measured in the last 20 s)."""
        lag = self.lags.get(target)
        if self.rpo is None or lag is None:
            return None
        if lag.value is None or lag.at is None or self.now - lag.at > lag.max_age:
            return "data lag unknown"
        return "data lag beyond rpo" if lag.value > self.rpo else None

    @invariant()
    def decisions_are_sound(self) -> None:
        snapshot = self.snapshot()
        decision = decide(snapshot, self.now)
        assert decide(snapshot, self.now) == decision  # pure: same input, same answer
        assert isinstance(decision, Decision) and decision.status in ServiceStatus  # exactly one status
        assert decision.reason.startswith("payroll: ")
        if self.running is not None:
            assert decision.action is None, "an action while a run is in progress"
            assert decision.guard is Guard.RUN_IN_PROGRESS
            assert decision.status in (ServiceStatus.FAILING_OVER, ServiceStatus.FAILOVER_PENDING)
            return
        if self.unacknowledged is not None:
            assert (decision.status, decision.guard, decision.action) == (
                ServiceStatus.BLOCKED, self.unacknowledged[1], None)
            return
        if decision.status is ServiceStatus.BLOCKED:
            assert decision.guard is not None and decision.action is None
        else:
            assert decision.guard is None
        if decision.status is ServiceStatus.UNAVAILABLE:
            assert all(s.effective is DOWN for s in self.sites.values())
        if decision.action is not None:
            self.check_action(decision)
        self.check_acts_when_free(decision)

    def check_action(self, decision: Decision) -> None:
        action = decision.action
        assert action is not None
        transfer = self.failover if action.kind is FAILOVER else self.failback
        assert transfer is not None and transfer.mode != "manual"
        assert action.to_site != self.active
        assert self.guard_holds(action.to_site, transfer) is None, self.guard_holds(action.to_site, transfer)
        assert action.dry_run == (transfer.mode == "dry-run")
        expected = ServiceStatus.FAILOVER_PENDING if action.dry_run else ServiceStatus.FAILING_OVER
        assert decision.status is expected
        if action.kind is FAILOVER:
            assert self.sites[self.active].effective is DOWN
            if action.dry_run:  # one automatic dry run per episode of the active site being down
                assert self.dry_run_since is None or self.dry_run_since < self.sites[self.active].since
        else:
            assert action.to_site == "dorset" and self.sites[self.active].effective is UP

    def check_acts_when_free(self, decision: Decision) -> None:
        """The other way round: in `auto` mode, with the active site down and a standby no guard holds
        against, the policy fails over (to such a standby)."""
        transfer = self.failover
        if transfer is None or transfer.mode != "auto" or self.sites[self.active].effective is not DOWN:
            return
        free = [name for name in SITES if name != self.active and self.guard_holds(name, transfer) is None]
        if free:
            assert decision.action is not None and decision.action.to_site in free, (decision, free)

    def check_verdict(self, snapshot: Snapshot, kind: RunKind, to: str | None, force: bool,
                      verdict: Verdict) -> None:
        if self.running is not None:
            assert verdict.to_site is None and verdict.conflict and verdict.guard is Guard.RUN_IN_PROGRESS
            return
        assert not verdict.conflict
        if verdict.to_site is None:
            assert verdict.guard is not None
            return
        assert verdict.guard is None
        assert self.unacknowledged is None, "an operator run before the failed one was acknowledged"
        assert verdict.to_site != self.active and verdict.to_site in SITES
        assert (self.failover if kind is FAILOVER else self.failback) is not None
        if to is not None:
            assert verdict.to_site == to
        if kind is FAILBACK:
            assert verdict.to_site == (to or "dorset")
        if not force:
            transfer = self.failover if kind is FAILOVER else self.failback
            assert transfer is not None
            assert self.sites[verdict.to_site].effective is UP, "an unforced move to a site that is not up"
            assert self.last_run_ended is None or self.now - self.last_run_ended >= transfer.cooldown
            assert self.data_lag_holds(verdict.to_site) is None, "an unforced move to a site lagging beyond rpo"
        else:
            assert ("accepted: data lag of" in verdict.accepted) == (self.data_lag_holds(verdict.to_site) is not None)


PolicyMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=30, deadline=None)
TestPolicyMachine = PolicyMachine.TestCase


def test_an_operator_request_to_a_site_in_maintenance_needs_force() -> None:
    snapshot = snap(DOWN, MAINTENANCE, names=("dorset", "hampshire"))
    refused = check_request(snapshot, Request(FAILOVER, "hampshire"), NOW)
    assert (refused.to_site, refused.guard) == (None, Guard.MAINTENANCE)
    assert "in maintenance (use force)" in refused.reason
    forced = check_request(snapshot, Request(FAILOVER, "hampshire", force=True), NOW)
    assert forced.to_site == "hampshire"


def dep(name: str, status: ServiceStatus, active: str = "hampshire", *, up: bool = True,
        guard: Guard | None = None) -> Dependency:
    return Dependency(name, status, active, up, ("dorset", "hampshire"), guard, f"{name}: its own reason")


DEPENDENCY_DECISIONS = [
    # (id, dependencies, mode, status, guard, starts, words in the reason)
    ("dependency up on the target", (dep("sql", ServiceStatus.OK),), "auto", ServiceStatus.FAILING_OVER, None, True,
     "starting failover to hampshire"),
    ("dependency moving", (dep("sql", ServiceStatus.FAILING_OVER, "dorset", up=False),), "auto",
     ServiceStatus.FAILOVER_PENDING, Guard.WAITING_FOR_DEPENDENCY, False,
     "payroll: failover to hampshire waits for sql (failing_over); active dorset down"),
    ("dependency blocked", (dep("sql", ServiceStatus.BLOCKED, "dorset", up=False, guard=Guard.STANDBY_NOT_UP),),
     "auto", ServiceStatus.BLOCKED, Guard.DEPENDENCY_FAILED, False,
     "blocked: payroll → sql: sql is blocked (standby_not_up): sql: its own reason"),
    ("an operator's mode does not wait", (dep("sql", ServiceStatus.FAILING_OVER, "dorset", up=False),), "manual",
     ServiceStatus.FAILOVER_PENDING, None, False, "waits for an operator"),
]


@pytest.mark.parametrize(("dependencies", "mode", "status", "guard", "starts", "reason"),
                         [case[1:] for case in DEPENDENCY_DECISIONS], ids=[c[0] for c in DEPENDENCY_DECISIONS])
def test_decide_with_dependencies(dependencies: tuple[Dependency, ...], mode: str, status: ServiceStatus,
                                  guard: Guard | None, starts: bool, reason: str) -> None:
    decision = decide(snap(DOWN, UP, failover=transfer_rule(mode), dependencies=dependencies), NOW)
    assert (decision.status, decision.guard, decision.action is not None) == (status, guard, starts)
    assert reason in decision.reason
