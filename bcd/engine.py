"""The live estate: applies observations to the pure health machines, asks the pure policy what each service
should do, starts runbooks, persists and announces every change. The edge around `bcd.health` and `bcd.policy`:
it owns every (service, site)'s `SiteHealth` and every service's view, journals each change before announcing it
on the bus (one group commit per 50 ms, not waiting for the disk: probes re-derive health after a power cut;
the runner commits runs and steps to disk at once), and logs one line per change. A journal that cannot be
written never silences a change (`bcd.journal.writer`); while it lasts no run starts and operator actions are
refused (JournalWriteError).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

import structlog

from bcd import data_lag, dependencies, events, health, impact, lag_journal, model, policy, site_loss
from bcd.bus import Bus
from bcd.config import Config, ProbeConfig
from bcd.events import Event, EventKind
from bcd.health import SiteHealth, SiteRules, Thresholds
from bcd.journal import Journal, JournalWriteError, RunJournal, SavedService, SavedSite
from bcd.journal.run_records import NO_RUNS, RunFacts
from bcd.journal.writer import JournalWriter
from bcd.model import Guard, Observation, PlanRef, ProbeKey, Result, RunKind, ServiceStatus, SiteState, Transition
from bcd.policy import Quorum, Request, RunInfo, Snapshot, TransferRule, Verdict
from bcd.runbooks.gate import gated
from bcd.runbooks.runner import ActiveRun, RunConflict, RunFence, RunHooks, Runner, RunRequest

log = structlog.get_logger("bcd.engine")

QUIET_STATUSES = frozenset({ServiceStatus.OK, ServiceStatus.UNKNOWN})


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A service's status and active site as this instance decides them (a vantage's published view of the sites
    is another thing: bcd/cluster/views.py)."""

    name: str
    status: ServiceStatus
    active: str
    since: float
    reason: str
    guard: Guard | None = None


class RequestRefused(Exception):
    """An operator's request was refused; `verdict` says why (HTTP 409 when `verdict.conflict`)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


class ClusterHooks(Protocol):
    """What the engine asks of the cluster link (bcd.cluster) when the daemon is one of several instances."""

    def quorum(self, service: str, active: str) -> Quorum: ...

    def remote_run(self, service: str) -> RunInfo | None: ...

    def start_automatic(self, service: str, action: policy.Action, reason: str) -> policy.Decision | None: ...

    async def start_requested(self, service: str, request: Request, to_site: str, by: str,
                              reason: str) -> ActiveRun: ...

    def acknowledged(self, service: str, by: str) -> None: ...

    def evidence(self, service: str, active: str) -> dict[str, Any]: ...

    def service_json(self, service: str) -> dict[str, Any]: ...


class Engine:
    """Built complete (its runner and cluster link made by the given factories, it their hooks); acts from act()."""

    def __init__(self, config: Config, journal: Journal, bus: Bus, clock: Callable[[], float] = time.time, *,
                 runner: Callable[[RunJournal, RunHooks], Runner] | None = None,
                 cluster: Callable[[Engine], ClusterHooks] | None = None):
        self.journal = journal
        self.writer = JournalWriter(journal, bus, clock)
        self.runs = RunJournal(journal, self.writer)
        self.bus = bus
        self.clock = clock
        self.config = config
        self.runner = runner(self.runs, self) if runner is not None else None  # stores its hooks, no more
        self.acting = False  # whether decisions start runs (`act`)
        self.sites: dict[tuple[str, str], SiteHealth] = {}
        self.services: dict[str, ServiceState] = {}
        self.rules: dict[tuple[str, str], SiteRules] = {}
        self.last: dict[ProbeKey, Observation] = {}
        self.first_failure: dict[tuple[str, str], float] = {}
        self.transitions: Counter[tuple[str, str, str, str]] = Counter()
        self._run_facts: dict[str, RunFacts] = {}
        self.writer.recovered = self._run_facts.clear  # run records kept while it failed are written now
        self.cluster: ClusterHooks | None = None  # made last (below); None: a lone instance (no `cluster:` section)
        self.site_loss = site_loss.SiteLoss(self.emit)  # which sites are lost (every service there down)
        self.lags = lag_journal.LagJournal(self.emit, clock)  # journals data lag crossing the RPO, and its maximum
        self._restore()
        self.apply_config(config)
        self.cluster = cluster(self) if cluster is not None else None  # after the first decisions, as before

    def act(self) -> None:
        """Start the runs decisions ask for from now on, and decide every service again. Called once the runner
        has recovered the runs the last daemon left unfinished, in the running loop."""
        assert self.runner is not None
        self.acting = True
        self._run_facts.clear()  # what was cached before may be stale: `recover()` marked runs interrupted
        for name in list(self.services):
            self._evaluate(name, self.clock())

    # -- configuration -------------------------------------------------------------------------------
    def apply_config(self, config: Config) -> None:
        """Adopt a (re)loaded config: new sites start unknown, removed ones are forgotten."""
        self.config = config
        self.writer.retention = config.journal.keep
        now = self.clock()
        self.rules = {key: rule for key, rule in _rules(config)}
        self.sites = {
            key: health.reconfigure(self.sites.get(key) or SiteHealth.new(key[0], key[1], now), rule)
            for key, rule in self.rules.items()
        }
        self.site_loss.configure(config, self.sites)
        self.lags.configure(config)  # a site that no longer measures its lag: its pending maximum is written
        self.last = {key: obs for key, obs in self.last.items() if (key.service, key.site) in self.rules}
        self.transitions = Counter({k: v for k, v in self.transitions.items() if (k[0], k[1]) in self.rules})
        self.services = {name: self._service_state(name, now) for name in config.services}
        self.dependents = dependencies.dependents(impact.GraphOf(config.services))
        if self.runner is not None:
            self.runner.stats.retain(set(config.services))
            self.runner.stats.declare(_runbooks(config))
        for name in list(self.services):
            self._evaluate(name, now)

    def _service_state(self, name: str, now: float) -> ServiceState:
        service = self.config.services[name]
        known = self.services.get(name)
        if known is not None and known.active in service.sites:
            return known
        return ServiceState(name, ServiceStatus.UNKNOWN, service.active, now, "starting")

    def _restore(self) -> None:
        for saved in self.journal.sites():
            self.sites[(saved.service, saved.site)] = SiteHealth.restore(
                saved.service, saved.site, base=SiteState(saved.base), flapping=saved.flapping,
                maintenance_until=saved.maintenance_until, maintenance_reason=saved.maintenance_reason,
                since=saved.since, reason=saved.reason,
            )
        for service in self.journal.services():
            self.services[service.service] = ServiceState(
                service.service, ServiceStatus(service.status), service.active, service.since, service.reason
            )

    # -- inputs --------------------------------------------------------------------------------------
    def observe(self, obs: Observation) -> int:
        """Apply an observation; returns what it leaves in doubt for the scheduler (`health.doubt`)."""
        key = (obs.key.service, obs.key.site)
        current = self.sites.get(key)
        if current is None:
            return model.SETTLED  # removed by a reload while the probe was in flight
        self.last[obs.key] = self.lags.observed(obs, self.config)
        if obs.result is Result.FAIL and key not in self.first_failure:
            self.first_failure[key] = obs.at
        updated, transition = health.observe(current, obs, self.rules[key])
        self.sites[key] = updated
        if transition is not None:
            self._announce_transition(updated, transition)
        elif updated.effective is not current.effective:  # changed under a maintenance overlay: silent, but
            self.writer.sites[key] = _saved(updated)       # persisted and re-decided (maintenance is a guard)
            self.emit(Event(EventKind.SITE_CHANGED_IN_MAINTENANCE, obs.at, obs.key.service, obs.key.site,
                            updated.reason, events.SiteChangedInMaintenance(str(updated.effective))),
                      effective=str(updated.effective))
            self._evaluate(obs.key.service, obs.at)
        return health.doubt(updated, obs.key.probe, self.rules[key])

    def tick(self) -> None:
        """Time passing: expire maintenance windows, re-decide services that wait for something."""
        now = self.clock()
        # the only thing time does to a site is end its maintenance (comprehensions: a large estate is
        # walked every second, and most of it has nothing to do)
        for key in [key for key, site in self.sites.items() if site.maintenance_until is not None]:
            updated, transition = health.tick(self.sites[key], now)
            self.sites[key] = updated
            if transition is not None:
                self._announce_transition(updated, transition)
        for name in [name for name, view in self.services.items() if view.status not in QUIET_STATUSES]:
            self._evaluate(name, now)
        self.site_loss.confirm(now, self.cluster)

    # -- decisions -----------------------------------------------------------------------------------
    def snapshot(self, name: str) -> Snapshot:
        service = self.config.services[name]
        view = self.services[name]
        runner = self.runner
        facts = self._facts(name)
        running = runner.running(name) if runner is not None else None
        if running is None and self.cluster is not None:
            running = self.cluster.remote_run(name)
        return Snapshot(
            service=name, active=view.active, home=service.active,
            sites={site: self.sites[(name, site)] for site in service.sites},
            failover=_rule(service.failover), failback=_rule(service.failback),
            running=running,
            unacknowledged=facts.unacknowledged,
            last_run_ended=facts.last_ended,
            dry_run_since=facts.last_dry_run,
            down_since=self.sites[(name, view.active)].since,
            quorum=self.cluster.quorum(name, view.active) if self.cluster is not None else None,
            dependencies=impact.dependency_facts(self.config.services, self.services, self.sites, name),
            **data_lag.snapshot_fields(self.config, name, self.last.get),
        )

    def _facts(self, name: str) -> RunFacts:
        """What the journal says about this service's runs (cached; dropped whenever a run changes)."""
        facts = self._run_facts.get(name)
        if facts is None:
            unacked = self.runs.unacknowledged(name)
            interrupted = unacked is not None and unacked.result == "interrupted"
            guard = Guard.RUN_INTERRUPTED if interrupted else Guard.RUN_FAILED
            facts = RunFacts((str(unacked.id), guard) if unacked is not None else None,
                             self.runs.last_ended(name), self.runs.last_dry_run(name))
            # most services have never run: they share one object (72 bytes a service otherwise)
            facts = self._run_facts[name] = NO_RUNS if facts == NO_RUNS else facts
        return facts

    def _evaluate(self, name: str, now: float) -> None:
        decision = policy.decide(self.snapshot(name), now)
        if decision.action is not None and self.acting:
            held = self._start_automatic(name, decision.action, decision.reason)
            decision = policy.decide(self.snapshot(name), now) if held is None else held
        self._set_status(name, decision.status, decision.reason, decision.guard, now)

    def refresh(self, name: str) -> None:
        """Decide again (the cluster's views or runs changed)."""
        if name in self.services:
            self._evaluate(name, self.clock())

    def _start_automatic(self, name: str, action: policy.Action, reason: str) -> policy.Decision | None:
        """Start the run the policy asks for; while the journal cannot be written, none starts and the
        service is blocked (guard journal_unwritable) by the Decision returned."""
        refusal = self.writer.refusal()
        try:
            if refusal is not None:
                raise JournalWriteError(refusal)
            if self.cluster is not None:  # the lock is taken first (asynchronously); the cluster starts the run,
                return self.cluster.start_automatic(name, action, reason)  # or says whom this instance waits for
            with contextlib.suppress(RunConflict):  # a run started in between: the next evaluation shows it
                self.start_run(name, action.kind, action.to_site, "auto", reason, dry_run=action.dry_run,
                                forced=False)
            return None
        except JournalWriteError as exc:
            return policy.Decision(ServiceStatus.BLOCKED, f"{name}: {action.kind} to {action.to_site} not started: "
                                   f"{exc}", Guard.JOURNAL_UNWRITABLE)

    def writable(self) -> None:
        """Raise JournalWriteError (HTTP 503) while the journal cannot be written: operator actions wait."""
        refusal = self.writer.refusal()
        if refusal is not None:
            raise JournalWriteError(f"refused: {refusal}")

    def start_run(self, name: str, kind: RunKind, to_site: str, trigger: str, reason: str, *, dry_run: bool,
                  forced: bool, fence: RunFence | None = None, plan: PlanRef | None = None,
                  drill: str | None = None) -> ActiveRun:
        """Start a run now (the cluster link calls this once it holds the lock). Raises RunConflict."""
        assert self.runner is not None
        service = self.config.services[name]
        transfer = service.failover if kind is RunKind.FAILOVER else service.failback
        assert transfer is not None
        # a plan's move is not gated again: its plan run waited for `require_approval` before its first group
        view, gate = self.services[name], self.config.require_approval if plan is None else None
        runbook = gated(self.config.runbooks[transfer.runbook], gate, kind, name, service.labels)
        return self.runner.start(RunRequest(
            service=name, runbook_name=transfer.runbook, runbook=runbook, kind=kind, from_site=view.active,
            to_site=to_site, trigger=trigger, reason=reason, dry_run=dry_run, forced=forced, plan=plan,
            evidence=self.evidence(name) | ({"drill": drill} if drill else {}),  # a drill's leg says so
            detected_at=self.first_failure.get((name, view.active)), fence=fence))

    def last_observations(self, service: str, site: str, probes: Iterable[ProbeConfig]) -> Iterator[Observation]:
        """The last observation of each of these probes of a site that has run (looked up, not searched for:
        a listing of every service stays linear in the estate)."""
        for probe in probes:
            obs = self.last.get(ProbeKey(service, site, probe.name))
            if obs is not None:
                yield obs

    def evidence(self, name: str) -> dict[str, Any]:
        """What the decision saw: every site's health and the last observation of each of its probes."""
        sites: dict[str, Any] = {}
        for site, config in self.config.services[name].sites.items():
            health_now = self.sites[(name, site)]
            sites[site] = {
                "state": str(health_now.state), "since": health_now.since, "reason": health_now.reason,
                "first_failure": self.first_failure.get((name, site)),
                "observations": {
                    obs.key.probe: {"result": str(obs.result), "reason": obs.reason, "at": obs.at}
                    for obs in self.last_observations(name, site, config.probes)
                },
            }
        objectives = self.config.objectives(name)  # in force now: a recovery is judged by it (bcd.recoveries)
        result: dict[str, Any] = {"active": self.services[name].active, "sites": sites,
                                  "objectives": {"rto": objectives.rto, "rpo": objectives.rpo}}
        if self.cluster is not None:
            result["quorum"] = self.cluster.evidence(name, self.services[name].active)
        return result

    def _set_status(self, name: str, status: ServiceStatus, reason: str, guard: Guard | None, now: float) -> None:
        view = self.services[name]
        if status == view.status and guard == view.guard:
            if reason != view.reason:
                self.services[name] = replace(view, reason=reason)
            return
        self.services[name] = ServiceState(name, status, view.active, now, reason, guard)
        self.writer.services[name] = SavedService(name, str(status), view.active, now, reason)
        data = events.ServiceStatusChanged(str(view.status), str(status), view.active, guard and str(guard))
        self.emit(Event(EventKind.SERVICE_STATUS, now, name, None, reason, data),
                  from_status=str(view.status), to_status=str(status), active=view.active,
                  guard=guard and str(guard), reason=reason)
        for dependent in sorted(self.dependents.get(name, ())):  # what waits for this service decides again
            self._evaluate(dependent, now)

    # -- operators -----------------------------------------------------------------------------------
    async def submit(self, name: str, request: Request, by: str, reason: str) -> ActiveRun:
        """An operator's failover/failback (through `bcd.operations`): checked by the policy, then started; in a
        cluster once this instance holds the service's lock. Raises RequestRefused (also when another instance
        holds the lock or nobody can say), or JournalWriteError while the journal cannot be written."""
        self.writable()
        verdict = policy.check_request(self.snapshot(name), request, self.clock())
        if verdict.to_site is None:
            raise RequestRefused(verdict)
        if not self.acting:  # the runner has not yet recovered the runs the last daemon left unfinished
            raise RequestRefused(Verdict(None, "the runner is not started"))
        reason += f" ({verdict.accepted})" if verdict.accepted else ""  # the journal keeps what force accepted
        if self.cluster is not None:
            run = await self.cluster.start_requested(name, request, verdict.to_site, by, reason)
        else:
            trigger_reason = f"{by}: {reason}" + (" (forced)" if request.force else "")
            try:
                trigger = "plan" if request.plan is not None else "drill" if request.drill else by  # `plan`, `drill`
                run = self.start_run(name, request.kind, verdict.to_site, trigger, trigger_reason,
                                      dry_run=request.dry_run, forced=request.force, plan=request.plan,
                                      drill=request.drill)
            except RunConflict as exc:
                raise RequestRefused(Verdict(None, str(exc), Guard.RUN_IN_PROGRESS, conflict=True)) from None
        self._evaluate(name, self.clock())
        return run

    def acknowledge(self, name: str, by: str, reason: str) -> list[int]:
        self.writable()
        if self.cluster is not None:  # first: it may refuse (RequestRefused: a witness cannot share it)
            self.cluster.acknowledged(name, by)
        ids = self.runs.acknowledge(name, by)
        self._run_facts.pop(name, None)
        now = self.clock()
        self.emit(Event(EventKind.ACKNOWLEDGED, now, name, None, f"{by}: {reason}",
                        events.Acknowledged(tuple(ids), by)), runs=ids, by=by)
        self._evaluate(name, now)
        return ids

    def start_maintenance(self, name: str, site: str | None, duration: float, reason: str, by: str) -> list[str]:
        """Maintenance for one site of a service, or all of them: probes go on, no alerts, no automation.
        Ends by itself at expiry (tick); persisted with the site's health. Returns the sites affected."""
        self.writable()
        now = self.clock()
        sites = self._maintenance_sites(name, site)
        for site_name in sites:
            key = (name, site_name)
            updated, transition = health.start_maintenance(self.sites[key], now + duration, f"{by}: {reason}", now)
            self._replace_site(updated, transition)
        self.emit(Event(EventKind.MAINTENANCE_STARTED, now, name, site, f"{by}: {reason}",
                        events.MaintenanceStarted(tuple(sites), now + duration, by)), sites=sites, by=by)
        self._evaluate(name, now)
        return sites

    def end_maintenance(self, name: str, site: str | None, by: str) -> list[str]:
        self.writable()
        now = self.clock()
        sites = [s for s in self._maintenance_sites(name, site) if self.sites[(name, s)].maintenance_until is not None]
        for site_name in sites:
            updated, transition = health.end_maintenance(self.sites[(name, site_name)], now, f"ended by {by}")
            self._replace_site(updated, transition)
        self.emit(Event(EventKind.MAINTENANCE_ENDED, now, name, site, f"ended by {by}",
                        events.MaintenanceEnded(tuple(sites), by)),
                  sites=sites, by=by)
        self._evaluate(name, now)
        return sites

    def _maintenance_sites(self, name: str, site: str | None) -> list[str]:
        sites = list(self.config.services[name].sites)
        if site is None:
            return sites
        if site not in sites:
            raise KeyError(f"{name} has no site {site!r}")
        return [site]

    def _replace_site(self, updated: SiteHealth, transition: Transition | None) -> None:
        self.sites[(updated.service, updated.site)] = updated
        if transition is not None:
            self._announce_transition(updated, transition)
        else:  # e.g. an extended maintenance: nothing to announce, but persist the new expiry
            self.writer.sites[(updated.service, updated.site)] = _saved(updated)
            self.emit(Event(EventKind.MAINTENANCE_EXTENDED, self.clock(), updated.service, updated.site,
                            updated.maintenance_reason, events.MaintenanceExtended(updated.maintenance_until)))

    # -- RunHooks ------------------------------------------------------------------------------------
    def site_state(self, service: str, site: str) -> SiteState:
        current = self.sites.get((service, site))
        return current.state if current is not None else SiteState.UNKNOWN

    def run_changed(self, service: str) -> None:
        self._run_facts.pop(service, None)
        if service in self.services:
            self._evaluate(service, self.clock())

    def run_succeeded(self, service: str, to_site: str, run_id: int) -> None:
        view = self.services.get(service)
        if view is None or view.active == to_site:  # a drill runbook's run moves nothing
            return
        now = self.clock()
        self.services[service] = replace(view, active=to_site)
        self.writer.services[service] = SavedService(service, str(view.status), to_site, view.since, view.reason)
        self.emit(Event(EventKind.ACTIVE_CHANGED, now, service, to_site, f"run {run_id} made {to_site} active",
                        events.ActiveChanged(view.active, to_site, run_id)),
                  from_site=view.active, to_site=to_site, run_id=run_id)

    def adopt_active(self, service: str, site: str, reason: str) -> None:
        """The cluster says `site` is the active site of `service` (written by the last run's lock holder)."""
        view = self.services.get(service)
        if view is None or view.active == site or site not in self.config.services[service].sites:
            return
        now = self.clock()
        self.services[service] = replace(view, active=site)
        self.writer.services[service] = SavedService(service, str(view.status), site, view.since, view.reason)
        self.emit(Event(EventKind.ACTIVE_CHANGED, now, service, site, reason, events.ActiveChanged(view.active, site)),
                  from_site=view.active, to_site=site)
        self._evaluate(service, now)

    # -- outputs: journaled (group commit), then logged and published whatever the commit's fate --------
    def _announce_transition(self, site: SiteHealth, transition: Transition) -> None:
        key = (transition.service, transition.site)
        self.transitions[(*key, transition.from_state, transition.to_state)] += 1
        if transition.to_state is SiteState.UP:
            self.first_failure.pop(key, None)
        self.writer.sites[key] = _saved(site)
        event = Event(
            EventKind.SITE_TRANSITION, transition.at, transition.service, transition.site, transition.reason,
            events.SiteTransition(str(transition.from_state), str(transition.to_state)),
        )
        self.emit(event, from_state=str(transition.from_state), to_state=str(transition.to_state),
                  reason=transition.reason)
        self.site_loss.update(site, transition.at, self.cluster)
        self._evaluate(transition.service, transition.at)

    def emit(self, event: Event, **log_fields: object) -> None:
        """Journal (the next group commit, within FLUSH_DELAY), then log and publish (bcd.journal.writer)."""
        self.writer.emit(event, **log_fields)

    def close(self) -> None:
        """Write what is pending (each site's highest data lag too); afterwards nothing is written (the journal is
        about to close)."""
        self.lags.close()
        self.writer.close()

def _rules(config: Config) -> list[tuple[tuple[str, str], SiteRules]]:
    """The rules of every site; sites with equal rules share one object (most sites of an estate do)."""
    rules: list[tuple[tuple[str, str], SiteRules]] = []
    shared: dict[tuple[tuple[str, int, int], ...], SiteRules] = {}
    for name, service in config.services.items():
        for site_name, site in service.sites.items():
            timings = [(probe.name, config.timing(name, probe)) for probe in site.probes]
            thresholds = tuple((probe, timing.rise, timing.fall) for probe, timing in timings)
            rule = shared.get(thresholds)
            if rule is None:
                rule = shared[thresholds] = SiteRules(
                    probes={probe: Thresholds(rise=rise, fall=fall) for probe, rise, fall in thresholds},
                    flap_high=config.flapping.high, flap_low=config.flapping.low,
                )
            rules.append(((name, site_name), rule))
    return rules


def _saved(site: SiteHealth) -> SavedSite:
    return SavedSite(site.service, site.site, str(site.base), site.flapping, site.maintenance_until,
                     site.maintenance_reason, site.since, site.reason)


def _rule(transfer: Any) -> TransferRule | None:
    return None if transfer is None else TransferRule(transfer.runbook, policy.TransferMode(transfer.mode),
                                                      transfer.cooldown)


def _runbooks(config: Config) -> dict[str, set[str]]:
    """service → the names of its failover and failback runbooks."""
    return {name: {t.runbook for t in (service.failover, service.failback) if t is not None}
            for name, service in config.services.items()}
