"""The dependency graph: cycles, closures, groups by depth and the critical path."""

from __future__ import annotations

import pytest

from bcd import dependencies

ESTATE = {
    "directory": [],
    "dns": [],
    "sql": ["directory"],
    "files": ["directory", "dns"],
    "payroll": ["sql", "directory"],
    "care": ["sql", "files"],
    "intranet": [],
}


@pytest.mark.parametrize(("graph", "expected"), [
    ({}, None),
    (ESTATE, None),
    ({"a": ["a"]}, ["a", "a"]),
    ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
    ({"x": [], "a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
    ({"a": ["b", "c"], "b": ["c"], "c": []}, None),  # a diamond is not a cycle
    ({"a": ["missing"]}, None),  # an unknown name is a leaf here (the config reports it on its own)
])
def test_cycle_is_returned_as_a_closed_path(graph: dict[str, list[str]], expected: list[str] | None) -> None:
    assert dependencies.cycle(graph) == expected


def test_a_deep_chain_does_not_exhaust_the_stack() -> None:
    chain = {f"s{i}": [f"s{i + 1}"] for i in range(5000)}
    assert dependencies.cycle(chain) is None
    chain["s5000"] = ["s0"]
    found = dependencies.cycle(chain)
    assert found is not None and found[0] == found[-1] and len(found) == 5002


def test_closure_and_dependents() -> None:
    assert dependencies.closure(ESTATE, "care") == {"sql", "files", "directory", "dns"}
    assert dependencies.closure(ESTATE, "intranet") == set()
    assert dependencies.dependents(ESTATE)["directory"] == {"sql", "files", "payroll"}


def test_dependents_leave_out_services_nothing_needs() -> None:
    # most services of an estate are needed by none: an empty set each was 2 MB at 10,000 services
    assert dependencies.dependents(ESTATE) == {"directory": {"sql", "files", "payroll"}, "dns": {"files"},
                                               "sql": {"payroll", "care"}, "files": {"care"}}


def test_groups_by_depth_of_the_deepest_dependency() -> None:
    assert dependencies.groups(ESTATE, ESTATE) == [
        ["directory", "dns", "intranet"], ["files", "sql"], ["care", "payroll"],
    ]


def test_groups_follow_dependencies_through_services_not_chosen() -> None:
    # payroll needs sql needs directory; sql is not moving (already there): payroll still follows directory
    assert dependencies.within(ESTATE, {"payroll", "directory"}) == {"payroll": ["directory"], "directory": []}
    assert dependencies.groups(ESTATE, ["payroll", "directory"]) == [["directory"], ["payroll"]]
    assert dependencies.groups(ESTATE, ["payroll", "intranet"]) == [["intranet", "payroll"]]
    assert dependencies.groups(ESTATE, []) == []


def test_critical_path_is_the_longest_chain_of_expected_durations() -> None:
    seconds = {"directory": 10, "dns": 30, "sql": 20, "files": 5, "payroll": 10, "care": 1, "intranet": 50}
    path = dependencies.critical_path(ESTATE, ESTATE, seconds)
    assert path.seconds == 50 and path.services in {("intranet",), ("directory", "sql", "payroll")}
    seconds["intranet"] = 1
    assert dependencies.critical_path(ESTATE, ESTATE, seconds) == dependencies.CriticalPath(
        40, ("directory", "sql", "payroll"))
    assert dependencies.critical_path(ESTATE, [], seconds) == dependencies.CriticalPath(0.0, ())
