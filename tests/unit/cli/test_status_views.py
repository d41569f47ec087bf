"""The lines `bcd status` prints under its table in a cluster, from the API's JSON: each vantage's view with
its age (stale in words past the lease), and the reasons of the views that see a site otherwise."""

from __future__ import annotations

from typing import Any

from bcd.cli.status import status_table
from bcd.cli.status_views import view_mark, views_block


def view(age: float, stale: bool, **sites: tuple[str, str]) -> dict[str, Any]:
    return {"age": age, "stale": stale, "lease_ttl": 10.0,
            "sites": {site: {"state": state, "since": 0.0, "reason": reason} for site, (state, reason) in sites.items()}}


def payroll(hampshire_age: float, stale: bool) -> dict[str, Any]:
    return {
        "name": "payroll", "status": "blocked", "active": "dorset", "lock": None, "coordination": "up",
        "sites": {"dorset": {"state": "down"}, "hampshire": {"state": "up"}},
        "views": {"dorset": view(0.0, False, dorset=("down", "HTTP 503"), hampshire=("up", "HTTP 200")),
                  "hampshire": view(hampshire_age, stale, dorset=("up", "HTTP 200 in 3 ms"),
                                    hampshire=("up", "HTTP 200"))},
    }


def test_fresh_views_show_their_age_and_the_reason_of_a_view_that_disagrees() -> None:
    assert views_block([payroll(1.3, stale=False)]) == [
        "views (each vantage's, as this instance last received it):",
        "  dorset     received 0.0s ago",
        "  hampshire  received 1.3s ago",
        "view reasons (where a vantage sees a site otherwise than this instance):",
        "  payroll in dorset, as hampshire sees it: up: HTTP 200 in 3 ms",
    ]


def test_a_view_older_than_the_lease_is_stale_in_words_in_the_cells_and_under_the_table() -> None:
    table = status_table([payroll(14.2, stale=True)], colour=False, every_view=True).splitlines()
    assert "down (dorset: down, hampshire: up, stale 14.2s)" in table[1]
    assert ("  hampshire  received 14.2s ago - STALE: older than its lease (10s): that instance may be gone, or "
            "this one cut off from etcd") in table
    assert table[table.index("view reasons:") + 1:] == [
        "  payroll in dorset, as dorset sees it: down: HTTP 503",
        "  payroll in dorset, as hampshire sees it (stale view): up: HTTP 200 in 3 ms",
        "  payroll in hampshire, as dorset sees it: up: HTTP 200",
        "  payroll in hampshire, as hampshire sees it (stale view): up: HTTP 200",
    ]


def test_a_lone_instance_prints_nothing_under_its_table() -> None:
    assert views_block([{"name": "payroll", "sites": {"dorset": {"state": "up"}}}]) == []
    assert view_mark({"age": 3.0, "stale": False}) == ""


def test_a_site_whose_dependency_is_down_there_is_named_impacted_under_the_table() -> None:
    services = [{"name": "directory", "status": "failing_over", "active": "dorset",
                 "sites": {"dorset": {"state": "down", "impacted_by": None}, "hampshire": {"state": "up"}}},
                {"name": "payroll", "status": "failover_pending", "active": "dorset",
                 "sites": {"dorset": {"state": "down", "impacted_by": "directory"}, "hampshire": {"state": "up"}}}]
    assert status_table(services, colour=False).splitlines()[-2:] == [
        "", "payroll at dorset: impacted by directory (its alerts are held)"]
    assert "impacted" not in status_table(services[:1], colour=False)
