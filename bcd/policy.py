"""PURE failover decisions: from a snapshot of one service and `now`, what status it shows and what to do.

No I/O and no clock reads: `decide()` is a function of (snapshot, now), and so is `check_request()`
for an operator's failover or failback. The runner carries decisions out; the engine builds snapshots.

The rules, in order:
1. A run in progress: `failing_over` (or `failover_pending` while a step waits for approval). Nothing else
   starts — the one-run-per-service lock holds even against `--force`.
2. An earlier run failed or was interrupted and nobody acknowledged it: `blocked` (`run_failed` /
   `run_interrupted`) — automation never retries silently.
3. The active site is down:
   - every other site down too → `unavailable` (nothing to fail over to);
   - no other site `up` (degraded, unknown, flapping) → `blocked` (`standby_not_up` or `flapping`);
   - a standby `up`: `blocked` by maintenance (service, active or target site), cooldown, or its data lag
     (`rpo_exceeded`, `bcd.rpo`); else by mode:
     `manual` → `failover_pending`; `dry-run` → one dry run per episode, then `failover_pending`;
     `auto` → start the failover runbook (`failing_over`) — once its dependencies are ready (`bcd.impact`:
     `failover_pending`/`waiting_for_dependency` while one moves, `blocked`/`dependency_failed` when one
     failed). No failover runbook → `failover_needed` (bcd only watches this service; a human moves it).
4. Otherwise the health status stands (`ok`, `at_risk`, `unknown`); with an automatic failback
   configured, a service away from its home site moves back once home is `up` and no guard holds.

In a cluster (`Snapshot.quorum` set; None for a lone instance) the active site counts as down for failover
only when `quorum.needed` of the live vantages see it down: short of that the service is `blocked`
(`no_quorum`, the votes and the dissenting views in the reason). Likewise a standby counts as up, as a
failover's target or an automatic failback's home, only when `quorum.needed` of them see it up: short of
that a failover is `blocked` (`standby_not_up`, with the votes) and a failback waits. Without coordination
nobody may act on its own: `blocked` (`coordination_unavailable`) wherever an automatic or pending action
would follow, and an operator's request needs `force`. A vantage that sees every site of every service down
suspects its own network and does not vote (`no_quorum`). A witness (`cluster.executor: false`) votes but runs
nothing: with no executing instance live, an automatic failover or failback is `blocked` (`no_executor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from bcd import impact
from bcd.health import SiteHealth, evaluate_service, evidence
from bcd.model import Guard, PlanRef, RunKind, ServiceStatus, SiteState
from bcd.rpo import Lag, lag_accepted, rpo_guard


class TransferMode(StrEnum):
    """How a service's failover or failback starts (its `mode:` in the config)."""

    AUTO = "auto"  # by itself once the guards allow it
    MANUAL = "manual"  # only by an operator
    DRY_RUN = "dry-run"  # a dry run by itself, the real run by an operator


@dataclass(frozen=True, slots=True)
class TransferRule:
    """A service's failover or failback settings, as the policy needs them."""

    runbook: str
    mode: TransferMode
    cooldown: float


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    kind: RunKind
    to_site: str
    waiting_approval: bool = False
    step: str = ""
    drill: str = ""  # a drill's run: "runbook" (its drill runbook) or "round_trip" (a leg); "" for any other


def described(run: RunInfo) -> str:
    """What a run does, for a reason: `failover to hampshire`, `drill runbook at dorset`, `drill leg: failback to
    dorset`."""
    if run.drill == "runbook":
        return f"drill runbook at {run.to_site}"
    return f"{'drill leg: ' if run.drill else ''}{run.kind} to {run.to_site}"


@dataclass(frozen=True, slots=True)
class Vote:
    """One live vantage's view of a site."""

    vantage: str
    state: SiteState
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Quorum:
    """What the cluster says about a service's active site, for one decision."""

    available: bool  # coordination (etcd) answers and our lease is valid
    votes: tuple[Vote, ...]  # every live vantage (ours included unless we suspect ourselves)
    needed: int  # votes for "down" needed for a failover (and for "up" on its target)
    suspect_self: bool = False  # we see every site of every service down: our own network, probably
    standbys: Mapping[str, tuple[Vote, ...]] | None = None  # votes on every other site; None: not counted
    executors: tuple[str, ...] | None = None  # live vantages that run runbooks (ours first); None: not counted

    @property
    def no_executor(self) -> str | None:
        """Why nobody can run a runbook now (None while an executing instance is live, or when not counted)."""
        if self.executors is None or self.executors:
            return None
        return (f"no executor: none of the live instances ({', '.join(self.live) or 'none'}) runs runbooks "
                "(cluster.executor: false); an executing instance must be live to take the lock")

    @property
    def live(self) -> tuple[str, ...]:
        return tuple(vote.vantage for vote in self.votes)

    @property
    def down(self) -> tuple[str, ...]:
        return tuple(vote.vantage for vote in self.votes if vote.state is SiteState.DOWN)

    @property
    def dissenting(self) -> tuple[Vote, ...]:
        return tuple(vote for vote in self.votes if vote.state is not SiteState.DOWN)

    @property
    def reached(self) -> bool:
        return self.available and self.needed > 0 and len(self.down) >= self.needed

    def describe(self, active: str) -> str:
        """e.g. "1 of 2 live vantages see dorset down, 2 needed; down: hampshire; dissenting: dorset up (…)"."""
        text = f"{len(self.down)} of {len(self.votes)} live vantages see {active} down, {self.needed} needed"
        if self.down:
            text += "; down: " + ", ".join(self.down)
        if self.dissenting:
            text += "; dissenting: " + _listed(self.dissenting)
        return text

    def standby_up(self, site: str) -> bool:
        """Whether `needed` live vantages see the standby `site` up (True when standby votes are not counted,
        or without coordination: that guard speaks first)."""
        if self.standbys is None or not self.available:
            return True
        up = [vote for vote in self.standbys.get(site, ()) if vote.state is SiteState.UP]
        return self.needed > 0 and len(up) >= self.needed

    def describe_standby(self, site: str) -> str:
        """e.g. "1 of 2 live vantages see hampshire up, 2 needed; dissenting: hampshire down (HTTP 503)"."""
        votes = (self.standbys or {}).get(site, ())
        dissenting = [vote for vote in votes if vote.state is not SiteState.UP]
        text = f"{len(votes) - len(dissenting)} of {len(votes)} live vantages see {site} up, {self.needed} needed"
        if dissenting:
            text += "; dissenting: " + _listed(dissenting)
        return text


def _listed(votes: Iterable[Vote]) -> str:
    return ", ".join(f"{vote.vantage} {vote.state}" + (f" ({vote.reason})" if vote.reason else "") for vote in votes)


def quorum_needed(setting: str | int, live: int) -> int:
    """Votes needed among `live` vantages: majority (live // 2 + 1), all (live), or a fixed number."""
    if setting == "majority":
        return live // 2 + 1
    if setting == "all":
        return max(live, 1)
    return int(setting)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the policy may look at for one service."""

    service: str
    active: str
    home: str
    sites: Mapping[str, SiteHealth]
    failover: TransferRule | None = None
    failback: TransferRule | None = None
    running: RunInfo | None = None
    unacknowledged: tuple[str, Guard] | None = None  # (run id, RUN_FAILED | RUN_INTERRUPTED)
    last_run_ended: float | None = None
    maintenance_until: float | None = None  # the whole service
    dry_run_since: float | None = None  # when the last automatic dry run of this episode started
    down_since: float | None = None  # when the active site went down (start of the episode)
    quorum: Quorum | None = None  # the cluster's votes on the active site; None for a lone instance
    dependencies: tuple[impact.Dependency, ...] = ()  # its `depends_on`, as they are now
    rpo: float | None = None  # the service's recovery point objective (seconds)
    lags: Mapping[str, Lag] = field(default_factory=dict)  # sites that measure their data lag


@dataclass(frozen=True, slots=True)
class Action:
    kind: RunKind
    to_site: str
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    status: ServiceStatus
    reason: str
    guard: Guard | None = None
    action: Action | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """An operator's failover or failback."""

    kind: RunKind
    to_site: str | None = None
    force: bool = False
    dry_run: bool = False
    plan: PlanRef | None = None  # a move of a recovery plan's run (trigger `plan`)
    drill: str | None = None  # a leg of this drill (bcd.drills): its run's evidence says so, no cooldown


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to a Request: a target site, or a refusal with the guard and a sentence."""

    to_site: str | None
    reason: str
    guard: Guard | None = None
    conflict: bool = False  # a run is in progress: HTTP 409
    accepted: str = ""  # what `force` accepted that would have refused (journaled with the run)


def decide(snap: Snapshot, now: float) -> Decision:
    if snap.running is not None:
        return _running(snap)
    if snap.unacknowledged is not None:
        run_id, guard = snap.unacknowledged
        word = "failed" if guard is Guard.RUN_FAILED else "was interrupted"
        return Decision(ServiceStatus.BLOCKED, f"{snap.service}: run {run_id} {word}; acknowledge to re-arm", guard)
    active = snap.sites[snap.active]
    if active.effective is SiteState.DOWN:
        return _active_down(snap, now)
    return _healthy(snap, now)


def _running(snap: Snapshot) -> Decision:
    run = snap.running
    assert run is not None
    if run.waiting_approval:
        return Decision(
            ServiceStatus.FAILOVER_PENDING,
            f"{snap.service}: run {run.id} ({described(run)}) waits for approval of step {run.step!r}",
            Guard.RUN_IN_PROGRESS,
        )
    return Decision(
        ServiceStatus.FAILING_OVER, f"{snap.service}: run {run.id} ({described(run)}) in progress",
        Guard.RUN_IN_PROGRESS,
    )


def up_standbys(snap: Snapshot) -> list[str]:
    """The standbys that are up, in config order, those in maintenance last: a standby in maintenance is
    picked (and then blocked by the maintenance guard) only when no other standby is up."""
    up = [name for name, site in snap.sites.items() if name != snap.active and site.effective is SiteState.UP]
    return sorted(up, key=lambda name: snap.sites[name].state is SiteState.MAINTENANCE)


def _active_down(snap: Snapshot, now: float) -> Decision:
    active_reason = evidence(snap.sites[snap.active])
    if snap.quorum is not None and snap.quorum.suspect_self:
        return Decision(
            ServiceStatus.BLOCKED,
            f"{snap.service}: failover blocked (this vantage sees every site of every service down: suspecting its "
            f"own network, its view is withdrawn and it does not vote): active {snap.active} down ({active_reason})",
            Guard.NO_QUORUM,
        )
    others = {name: site for name, site in snap.sites.items() if name != snap.active}
    if all(site.effective is SiteState.DOWN for site in others.values()):
        states = ", ".join(f"{name} down" for name in snap.sites)
        return Decision(ServiceStatus.UNAVAILABLE, f"{snap.service}: no site up: {states}")
    candidates = up_standbys(snap)
    if not candidates:
        flapping = [name for name, site in others.items() if site.effective is SiteState.FLAPPING]
        guard = Guard.FLAPPING if flapping else Guard.STANDBY_NOT_UP
        states = ", ".join(f"{name} {site.effective}" for name, site in others.items())
        return Decision(
            ServiceStatus.BLOCKED,
            f"{snap.service}: failover blocked: active {snap.active} down ({active_reason}); no standby up ({states})",
            guard,
        )
    confirmed = [name for name in candidates if snap.quorum is None or snap.quorum.standby_up(name)]
    if not confirmed:
        assert snap.quorum is not None
        votes = "; ".join(snap.quorum.describe_standby(name) for name in candidates)
        return Decision(
            ServiceStatus.BLOCKED,
            f"{snap.service}: failover blocked: active {snap.active} down ({active_reason}); no standby up for a "
            f"quorum of vantages ({votes})",
            Guard.STANDBY_NOT_UP,
        )
    # a standby whose data lags past the rpo is picked (and then blocked) only when no other one is up
    target = next((name for name in confirmed if rpo_guard(snap.rpo, snap.lags.get(name), name, now) is None),
                  confirmed[0])
    base = f"active {snap.active} down ({active_reason}); standby {target} up"
    if snap.failover is None:  # bcd only watches this service: say so, a human moves it
        return Decision(ServiceStatus.FAILOVER_NEEDED, f"{snap.service}: {base}")
    held = _guard(snap, target, snap.failover, now) or _cluster_guard(snap)
    if held is not None:
        return Decision(ServiceStatus.BLOCKED, f"{snap.service}: failover blocked ({held[1]}): {base}", held[0])
    if snap.quorum is not None:
        base += f"; quorum: {snap.quorum.describe(snap.active)}"
    return _by_mode(snap, target, base)


def _cluster_guard(snap: Snapshot) -> tuple[Guard, str] | None:
    """In a cluster: no action without coordination, no failover without a quorum of vantages."""
    quorum = snap.quorum
    if quorum is None:
        return None
    if not quorum.available:
        return Guard.COORDINATION_UNAVAILABLE, "coordination unavailable: no automatic action"
    if not quorum.reached:
        return Guard.NO_QUORUM, f"no quorum: {quorum.describe(snap.active)}"
    if quorum.no_executor is not None:
        return Guard.NO_EXECUTOR, quorum.no_executor
    return None


def _guard(snap: Snapshot, target: str, rule: TransferRule | None, now: float) -> tuple[Guard, str] | None:
    if rule is None:
        return Guard.NO_RUNBOOK, "no runbook configured"
    if snap.maintenance_until is not None and snap.maintenance_until > now:
        return Guard.MAINTENANCE, "service in maintenance"
    for name in (snap.active, target):
        if snap.sites[name].state is SiteState.MAINTENANCE:
            return Guard.MAINTENANCE, f"site {name} in maintenance"
        elsewhere = _maintained_elsewhere(snap, name)
        if elsewhere:
            return Guard.MAINTENANCE, f"site {name} in maintenance on {', '.join(elsewhere)}"
    if (rule.mode is not TransferMode.MANUAL and snap.last_run_ended is not None
            and now - snap.last_run_ended < rule.cooldown):
        left = rule.cooldown - (now - snap.last_run_ended)
        return Guard.COOLDOWN, f"cooldown, {left:.0f}s left"
    return rpo_guard(snap.rpo, snap.lags.get(target), target, now)


def _maintained_elsewhere(snap: Snapshot, site: str) -> list[str]:
    """The vantages whose view shows `site` in maintenance: maintenance is set on one instance, and no
    instance may act automatically on a site that an operator has taken out of service through another."""
    quorum = snap.quorum
    if quorum is None:
        return []
    votes = quorum.votes if site == snap.active else (quorum.standbys or {}).get(site, ())
    return [vote.vantage for vote in votes if vote.state is SiteState.MAINTENANCE]


def _by_mode(snap: Snapshot, target: str, base: str) -> Decision:
    rule = snap.failover
    assert rule is not None
    if rule.mode is TransferMode.AUTO:
        held = impact.hold(snap.service, target, snap.dependencies)
        if held is not None:
            waiting = held.guard is Guard.WAITING_FOR_DEPENDENCY
            return Decision(ServiceStatus.FAILOVER_PENDING if waiting else ServiceStatus.BLOCKED,
                            f"{snap.service}: failover to {target} {'' if waiting else 'blocked: '}{held.text}; "
                            f"{base}", held.guard)
        return Decision(
            ServiceStatus.FAILING_OVER, f"{snap.service}: starting failover to {target}: {base}",
            action=Action(RunKind.FAILOVER, target),
        )
    if rule.mode is TransferMode.DRY_RUN and not _dry_run_done(snap):
        return Decision(
            ServiceStatus.FAILOVER_PENDING, f"{snap.service}: dry run of failover to {target}: {base}",
            action=Action(RunKind.FAILOVER, target, dry_run=True),
        )
    reason = f"{snap.service}: failover to {target} waits for an operator: {base}"
    return Decision(ServiceStatus.FAILOVER_PENDING, reason)


def _dry_run_done(snap: Snapshot) -> bool:
    return snap.dry_run_since is not None and (snap.down_since is None or snap.dry_run_since >= snap.down_since)


def _healthy(snap: Snapshot, now: float) -> Decision:
    status, reason = evaluate_service(snap.active, snap.sites)
    rule = snap.failback
    if (
        status is ServiceStatus.OK
        and rule is not None
        and rule.mode is TransferMode.AUTO
        and snap.active != snap.home
        and snap.sites[snap.home].effective is SiteState.UP
        and (snap.quorum is None or snap.quorum.standby_up(snap.home))
        and _guard(snap, snap.home, rule, now) is None
    ):
        if snap.quorum is not None and not snap.quorum.available:
            return Decision(
                ServiceStatus.BLOCKED,
                f"{snap.service}: failback to home site {snap.home} blocked (coordination unavailable: "
                "no automatic action)", Guard.COORDINATION_UNAVAILABLE,
            )
        if snap.quorum is not None and snap.quorum.no_executor is not None:
            return Decision(ServiceStatus.BLOCKED, f"{snap.service}: failback to home site {snap.home} blocked "
                                                   f"({snap.quorum.no_executor})", Guard.NO_EXECUTOR)
        return Decision(
            ServiceStatus.FAILING_OVER, f"{snap.service}: starting failback to home site {snap.home} (up again)",
            action=Action(RunKind.FAILBACK, snap.home),
        )
    if status is ServiceStatus.FAILOVER_NEEDED or status is ServiceStatus.UNAVAILABLE:
        status = ServiceStatus.AT_RISK  # the active site is not down: nothing to fail over from
    return Decision(status, reason)


def check_request(snap: Snapshot, request: Request, now: float) -> Verdict:
    """May an operator's failover/failback go ahead, and to which site?"""
    if snap.running is not None:
        return Verdict(None, f"run {snap.running.id} of {snap.service} is in progress", Guard.RUN_IN_PROGRESS, True)
    if snap.unacknowledged is not None:
        run_id, guard = snap.unacknowledged
        return Verdict(None, f"run {run_id} of {snap.service} needs acknowledging first (bcd ack)", guard)
    target, why = _target(snap, request)
    if target is None:
        return Verdict(None, why, Guard.STANDBY_NOT_UP)
    rule = snap.failover if request.kind is RunKind.FAILOVER else snap.failback
    if rule is None:
        return Verdict(None, f"{snap.service} has no {request.kind} runbook", Guard.NO_RUNBOOK)
    if snap.quorum is not None and not snap.quorum.available and not request.force:
        return Verdict(None, f"coordination unavailable: nobody can say who holds the lock of {snap.service} "
                             "(use force to act from this instance alone)", Guard.COORDINATION_UNAVAILABLE)
    if request.force:
        accepted = lag_accepted(snap.rpo, snap.lags.get(target), target, now)
        return Verdict(target, f"forced {request.kind} to {target}", accepted=accepted)
    if snap.sites[target].effective is not SiteState.UP:
        state = snap.sites[target].effective
        return Verdict(None, f"target {target} is {state}, not up (use force)", Guard.STANDBY_NOT_UP)
    if snap.sites[target].state is SiteState.MAINTENANCE:
        return Verdict(None, f"target {target} is in maintenance (use force)", Guard.MAINTENANCE)
    if snap.last_run_ended is not None and now - snap.last_run_ended < rule.cooldown:
        left = rule.cooldown - (now - snap.last_run_ended)
        return Verdict(None, f"cooldown: {left:.0f}s left (use force)", Guard.COOLDOWN)
    lagging = rpo_guard(snap.rpo, snap.lags.get(target), target, now)
    if lagging is not None:
        return Verdict(None, f"{lagging[1]} (use force)", lagging[0])
    return Verdict(target, f"{request.kind} to {target}")


def _target(snap: Snapshot, request: Request) -> tuple[str | None, str]:
    if request.to_site is not None:
        if request.to_site not in snap.sites:
            return None, f"{snap.service} has no site {request.to_site!r}"
        if request.to_site == snap.active:
            return None, f"{request.to_site} is already the active site of {snap.service}"
        return request.to_site, ""
    if request.kind is RunKind.FAILBACK:
        if snap.active == snap.home:
            return None, f"{snap.service} is already on its home site {snap.home}"
        return snap.home, ""
    candidates = up_standbys(snap)
    if candidates:
        return candidates[0], ""
    if request.force:
        return next(name for name in snap.sites if name != snap.active), ""
    return None, f"no standby of {snap.service} is up"
