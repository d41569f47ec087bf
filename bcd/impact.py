"""PURE: what a service's dependencies (`depends_on`) do to it — the order of automatic failovers that happen
at once, and the root cause of a site that is down. No I/O, no clock.

Ordering. A service's automatic failover to site S waits (`failover_pending`, guard
`waiting_for_dependency`) while a dependency is on its way: moving (`failover_pending`, `failing_over`,
`failover_needed`) or not `up` on its active site. It goes ahead once every dependency is `up` where it is
active and not moving (on S after its own failover), or has no site S to move to. A dependency that is
`blocked` or `unavailable` makes the dependent `blocked` (`dependency_failed`), the chain down to the root
cause in the reason: waiting never turns into a deadlock, a human is paged instead. A dependency whose active
site is in maintenance (or `blocked` only by maintenance) has not failed, it is being worked on: the dependent
waits until the maintenance ends, the maintenance in the reason, rather than race it (moving away from its
dependency would not help the dependent).

Impact. While a dependency is down at a site, the dependent's health at that site is explained by it: its
`BcdSiteDown` for that site carries `impacted_by` (the root causes: the dependencies down there that are not
impacted themselves) and is not sent as a page; the root cause's own alert pages. A dependency in maintenance
at that site is a root cause too, down or not (planned work explains its dependents' trouble there; its own
alerts are held by the maintenance): its dependents do not page either until the maintenance ends, and the
maintenance is named beside them (`in_maintenance`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bcd import dependencies
from bcd.dependencies import Graph
from bcd.health import SiteHealth
from bcd.model import Guard, ServiceStatus, SiteState

MOVING = frozenset({ServiceStatus.FAILOVER_PENDING, ServiceStatus.FAILING_OVER, ServiceStatus.FAILOVER_NEEDED})
FAILED = frozenset({ServiceStatus.BLOCKED, ServiceStatus.UNAVAILABLE})


@dataclass(frozen=True, slots=True)
class Dependency:
    """What a dependent's decision needs to know of one of its dependencies."""

    name: str
    status: ServiceStatus
    active: str
    active_up: bool  # its active site is `up` (effective state)
    sites: tuple[str, ...]
    guard: Guard | None = None
    reason: str = ""  # the root cause's reason when it failed (its own otherwise)
    chain: tuple[str, ...] = ()  # when it failed: itself down to the root cause
    maintenance: str = ""  # its active site's maintenance ("at dorset: <reason>"), when it is in one


@dataclass(frozen=True, slots=True)
class Hold:
    """Why an automatic failover does not start yet: WAITING_FOR_DEPENDENCY or DEPENDENCY_FAILED."""

    guard: Guard
    text: str


def hold(service: str, target: str, dependencies: Sequence[Dependency]) -> Hold | None:
    """Whether `service`'s automatic failover to `target` must wait for (or is blocked by) a dependency; None when
    every dependency is ready. A failed dependency speaks before one still moving."""
    waiting: list[str] = []
    for dep in dependencies:
        if target not in dep.sites:
            continue  # it has no site to move to: nothing to wait for
        if dep.maintenance or (dep.status in FAILED and dep.guard is Guard.MAINTENANCE):
            # planned work on it: wait until its maintenance ends rather than race it (even once it looks up
            # again: the work may not be over, and the dependent may be about to recover where it is)
            waiting.append(f"{dep.name} (in maintenance {dep.maintenance or dep.reason})")
            continue
        elif dep.status in FAILED:
            chain = " → ".join((service, *(dep.chain or (dep.name,))))
            root = (dep.chain or (dep.name,))[-1]
            guard = f" ({dep.guard})" if dep.guard is not None else ""
            text = f"{chain}: {root} is {dep.status}{guard}" + (f": {dep.reason}" if dep.reason else "")
            return Hold(Guard.DEPENDENCY_FAILED, text)
        if dep.status in MOVING:
            guard = f", {dep.guard}" if dep.guard is not None else ""
            waiting.append(f"{dep.name} ({dep.status}{guard})")
        elif not dep.active_up:
            waiting.append(f"{dep.name} (not up on {dep.active})")
    if waiting:
        return Hold(Guard.WAITING_FOR_DEPENDENCY, "waits for " + ", ".join(waiting))
    return None


class StateLike(Protocol):
    """A service's decided state, as the engine keeps it."""

    @property
    def status(self) -> ServiceStatus: ...

    @property
    def active(self) -> str: ...

    @property
    def guard(self) -> Guard | None: ...

    @property
    def reason(self) -> str: ...


class Needs(Protocol):
    """A service's config, as far as dependencies go."""

    @property
    def depends_on(self) -> Sequence[str]: ...


class ServiceLike(Needs, Protocol):
    @property
    def sites(self) -> Mapping[str, object]: ...


class GraphOf(Mapping[str, Sequence[str]]):
    """The dependency graph read straight from the services' configs (nothing copied: O(1) to make)."""

    def __init__(self, services: Mapping[str, Needs]) -> None:
        self._services = services

    def __getitem__(self, name: str) -> Sequence[str]:
        return self._services[name].depends_on

    def __iter__(self) -> Iterator[str]:
        return iter(self._services)

    def __len__(self) -> int:
        return len(self._services)


def dependency_facts(services: Mapping[str, ServiceLike], states: Mapping[str, StateLike],
                     health: Mapping[tuple[str, str], SiteHealth], service: str) -> tuple[Dependency, ...]:
    """The facts `hold()` looks at for each direct dependency of `service` (those not configured are left out)."""
    graph = GraphOf(services)
    facts = []
    for name in sorted(graph.get(service, ())):
        state = states.get(name)
        if state is None:
            continue
        site = health.get((name, state.active))
        chain, root = _root(graph, states, name)
        facts.append(Dependency(
            name, state.status, state.active, site is not None and site.effective is SiteState.UP,
            tuple(services[name].sites), root.guard, root.reason, chain if state.status in FAILED else (),
            _maintenance(site),
        ))
    return tuple(facts)


def _maintenance(site: SiteHealth | None) -> str:
    if site is None or site.maintenance_until is None:
        return ""
    return f"at {site.site}" + (f": {site.maintenance_reason}" if site.maintenance_reason else "")


def _root(graph: Graph, states: Mapping[str, StateLike], name: str) -> tuple[tuple[str, ...], StateLike]:
    """Follow a service blocked by a failed dependency down to the service that failed on its own."""
    chain = [name]
    state = states[name]
    while state.guard is Guard.DEPENDENCY_FAILED:
        failed = [need for need in sorted(graph.get(chain[-1], ()))
                  if need in states and states[need].status in FAILED and need not in chain]
        if not failed:
            break
        chain.append(failed[0])
        state = states[failed[0]]
    return tuple(chain), state


def blocked_by(graph: Graph, states: Mapping[str, StateLike], service: str) -> str:
    """The root cause of `service` being blocked by a failed dependency (`dependency_failed`); "" otherwise."""
    state = states.get(service)
    if state is None or state.guard is not Guard.DEPENDENCY_FAILED:
        return ""
    chain, _ = _root(graph, states, service)
    return chain[-1] if len(chain) > 1 else ""


def impacted_by(graph: Graph, health: Mapping[tuple[str, str], SiteHealth], service: str, site: str) -> str:
    """The root causes of `service` being down at `site`, comma-separated ("" when none): the services it needs,
    directly or through others, that are down there, or failing (degraded: a dependency confirmed more slowly
    than its dependent is still its root cause), and are not themselves explained by one of theirs."""
    if not _down(health, service, site):
        return ""
    roots = sorted(name for name in _down_needs(graph, health, service, site)
                   if not _down_needs(graph, health, name, site))
    return ",".join(roots)


def in_maintenance(health: Mapping[tuple[str, str], SiteHealth], causes: str, site: str) -> str:
    """Of the root causes `causes` (as `impacted_by` gives them), those in maintenance at `site`, each with the
    maintenance's reason ("directory: Dorset patching"); "" when none is."""
    named = []
    for name in causes.split(",") if causes else ():
        found = health.get((name, site))
        if found is not None and found.maintenance_until is not None:
            named.append(f"{name}: {found.maintenance_reason}" if found.maintenance_reason else name)
    return ", ".join(named)


def _down_needs(graph: Graph, health: Mapping[tuple[str, str], SiteHealth], service: str, site: str) -> set[str]:
    """The services `service` needs (transitively) that are down or degraded at `site`, or in maintenance there
    (planned work explains its dependents' trouble there, even while its own probes pass)."""
    return {name for name in dependencies.closure(graph, service)
            if _down(health, name, site, SiteState.DEGRADED, SiteState.MAINTENANCE)}


def _down(health: Mapping[tuple[str, str], SiteHealth], service: str, site: str,
          *also: SiteState) -> bool:
    found = health.get((service, site))
    return found is not None and (found.state is SiteState.DOWN or found.state in also)
