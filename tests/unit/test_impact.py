"""bcd.impact: when a dependent's automatic failover waits or is blocked by a dependency (a table), the chain
down to a root cause, and which dependency explains a site being down."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from bcd.health import SiteHealth
from bcd.impact import Dependency, dependency_facts, hold, impacted_by, in_maintenance
from bcd.model import Guard, ServiceStatus, SiteState

OK, BLOCKED, PENDING = ServiceStatus.OK, ServiceStatus.BLOCKED, ServiceStatus.FAILOVER_PENDING
MOVING, UNAVAILABLE = ServiceStatus.FAILING_OVER, ServiceStatus.UNAVAILABLE
WAIT, FAILED = Guard.WAITING_FOR_DEPENDENCY, Guard.DEPENDENCY_FAILED
BOTH = ("dorset", "hampshire")


def dep(name: str, status: ServiceStatus, active: str = "hampshire", *, up: bool = True, guard: Guard | None = None,
        sites: tuple[str, ...] = BOTH, chain: tuple[str, ...] = ()) -> Dependency:
    return Dependency(name, status, active, up, sites, guard, f"why {name}", chain)


HOLDS = [
    # (id, dependencies, guard or None, the reason's text)
    ("none", (), None, ""),
    ("up and active on the target", (dep("sql", OK),), None, ""),
    ("up where it is, not moving", (dep("sql", OK, "kent"),), None, ""),
    ("no site to move to", (dep("sql", BLOCKED, "dorset", up=False, sites=("dorset",)),), None, ""),
    ("failing over", (dep("sql", MOVING, "dorset", up=False),), WAIT, "waits for sql (failing_over)"),
    ("waiting itself", (dep("sql", PENDING, "dorset", up=False, guard=WAIT),), WAIT,
     "waits for sql (failover_pending, waiting_for_dependency)"),
    ("waiting for an operator", (dep("sql", ServiceStatus.FAILOVER_NEEDED, "dorset", up=False),), WAIT,
     "waits for sql (failover_needed)"),
    ("not up on its active site yet", (dep("sql", ServiceStatus.AT_RISK, "dorset", up=False),), WAIT,
     "waits for sql (not up on dorset)"),
    ("two waited for", (dep("dns", MOVING, "dorset", up=False), dep("sql", MOVING, "dorset", up=False)), WAIT,
     "waits for dns (failing_over), sql (failing_over)"),
    ("blocked", (dep("sql", BLOCKED, "dorset", up=False, guard=Guard.RUN_FAILED),), FAILED,
     "payroll → sql: sql is blocked (run_failed): why sql"),
    ("unavailable", (dep("sql", UNAVAILABLE, "dorset", up=False),), FAILED, "payroll → sql: sql is unavailable"),
    ("a chain", (dep("sql", BLOCKED, "dorset", up=False, guard=Guard.STANDBY_NOT_UP, chain=("sql", "directory")),),
     FAILED, "payroll → sql → directory: directory is blocked (standby_not_up): why sql"),
    ("failed speaks before moving", (dep("dns", MOVING, "dorset", up=False), dep("sql", BLOCKED, "dorset", up=False)),
     FAILED, "payroll → sql"),
]


@pytest.mark.parametrize(("dependencies", "guard", "text"), [case[1:] for case in HOLDS], ids=[c[0] for c in HOLDS])
def test_hold(dependencies: tuple[Dependency, ...], guard: Guard | None, text: str) -> None:
    held = hold("payroll", "hampshire", dependencies)
    if guard is None:
        assert held is None
    else:
        assert held is not None
        assert held.guard is guard
        assert text in held.text


@dataclass(frozen=True)
class State:
    status: ServiceStatus
    active: str
    guard: Guard | None = None
    reason: str = ""


GRAPH = {"directory": (), "sql": ("directory",), "payroll": ("sql", "directory"), "web": ("payroll",)}


@dataclass(frozen=True)
class Service:
    depends_on: tuple[str, ...]
    sites: tuple[str, ...] = BOTH


SERVICES = {name: Service(needs) for name, needs in GRAPH.items()}


def health(**states: SiteState) -> dict[tuple[str, str], SiteHealth]:
    """`name_site=state` pairs; everything else up."""
    table = {(name, site): SiteHealth(name, site, SiteState.UP) for name in GRAPH for site in BOTH}
    for key, state in states.items():
        name, site = key.split("_")
        table[(name, site)] = SiteHealth(name, site, state)
    return table


def test_facts_follow_a_failed_chain_to_its_root() -> None:
    states = {
        "directory": State(BLOCKED, "dorset", Guard.STANDBY_NOT_UP, "directory: no standby up"),
        "sql": State(BLOCKED, "dorset", FAILED, "sql: blocked"),
        "payroll": State(PENDING, "dorset", WAIT),
    }
    facts = dependency_facts(SERVICES, states, health(sql_dorset=SiteState.DOWN), "payroll")
    assert [fact.name for fact in facts] == ["directory", "sql"]
    sql = facts[1]
    assert (sql.chain, sql.guard, sql.reason, sql.active_up) == (
        ("sql", "directory"), Guard.STANDBY_NOT_UP, "directory: no standby up", False)
    held = hold("payroll", "hampshire", facts)
    assert held is not None and held.guard is FAILED
    assert "payroll → directory: directory is blocked (standby_not_up): directory: no standby up" in held.text


def test_facts_of_a_dependency_that_is_well() -> None:
    states = {"directory": State(OK, "hampshire"), "sql": State(OK, "dorset")}
    facts = dependency_facts(SERVICES, states, health(), "sql")
    assert facts == (Dependency("directory", OK, "hampshire", True, BOTH, None, "", ()),)


IMPACTS = [
    # (id, down at dorset, service, impacted_by)
    ("nothing down", (), "payroll", ""),
    ("the dependency is down, the dependent is not", ("directory",), "payroll", ""),
    ("the root cause itself is not impacted", ("directory", "sql"), "directory", ""),
    ("a direct dependency", ("directory", "sql"), "sql", "directory"),
    ("the root, not the nearest", ("directory", "sql", "payroll", "web"), "web", "directory"),
    ("down on its own", ("web",), "web", ""),
    ("through a dependency that is up", ("directory", "web"), "web", "directory"),
]


@pytest.mark.parametrize(("down", "service", "expected"), [case[1:] for case in IMPACTS], ids=[c[0] for c in IMPACTS])
def test_impacted_by(down: tuple[str, ...], service: str, expected: str) -> None:
    table = health(**{f"{name}_dorset": SiteState.DOWN for name in down})
    assert impacted_by(GRAPH, table, service, "dorset") == expected
    assert impacted_by(GRAPH, table, service, "hampshire") == ""


def test_two_root_causes_are_both_named() -> None:
    graph = {"dns": (), "directory": (), "app": ("dns", "directory")}
    table = {(name, "dorset"): SiteHealth(name, "dorset", SiteState.DOWN) for name in graph}
    assert impacted_by(graph, table, "app", "dorset") == "directory,dns"


def test_a_dependency_still_in_doubt_is_the_root_cause_of_a_dependent_confirmed_first() -> None:
    # fast confirmation can make payroll down while directory, probed later, is only degraded yet
    table = health(directory_dorset=SiteState.DEGRADED, payroll_dorset=SiteState.DOWN)
    assert impacted_by(GRAPH, table, "payroll", "dorset") == "directory"
    assert impacted_by(GRAPH, health(payroll_dorset=SiteState.DOWN), "payroll", "dorset") == ""
    assert impacted_by(GRAPH, health(directory_dorset=SiteState.DEGRADED), "directory", "dorset") == ""


MAINTAINED = SiteHealth("directory", "dorset", SiteState.UP, maintenance_until=200.0,
                        maintenance_reason="olive: Dorset patching")


@pytest.mark.parametrize("status", [BLOCKED, OK])
def test_a_dependency_in_maintenance_is_waited_for_not_failed(status: ServiceStatus) -> None:
    # blocked only by its maintenance (down under it), or up again while the work goes on: either way wait
    maintained = Dependency("directory", status, "dorset", status is OK, BOTH, Guard.MAINTENANCE if
                            status is BLOCKED else None, "why directory", (), "at dorset: olive: Dorset patching")
    held = hold("payroll", "hampshire", (maintained,))
    assert held is not None and held.guard is WAIT
    assert held.text == "waits for directory (in maintenance at dorset: olive: Dorset patching)"


def test_facts_name_a_dependency_s_maintenance() -> None:
    state = State(ServiceStatus.BLOCKED, "dorset", Guard.MAINTENANCE, "directory: failover blocked")
    (fact,) = dependency_facts({"directory": Service(()), "payroll": Service(("directory",))},
                               {"directory": state}, {("directory", "dorset"): MAINTAINED}, "payroll")
    assert fact.maintenance == "at dorset: olive: Dorset patching"


@pytest.mark.parametrize("base", [SiteState.DOWN, SiteState.UP])
def test_a_dependency_in_maintenance_explains_its_dependents_whatever_its_probes_say(base: SiteState) -> None:
    table = {("directory", "dorset"): replace(MAINTAINED, base=base),
             ("payroll", "dorset"): SiteHealth("payroll", "dorset", SiteState.DOWN)}
    assert impacted_by(GRAPH, table, "payroll", "dorset") == "directory"
    assert in_maintenance(table, "directory", "dorset") == "directory: olive: Dorset patching"
    assert in_maintenance(table, "directory", "hampshire") == in_maintenance(table, "", "dorset") == ""
