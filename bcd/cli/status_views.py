"""What `bcd status` prints under its table in a cluster: how fresh each vantage's view is (its age, and
`stale` in words when it is older than the lease), and the reason of every view that differs from this
instance's own state of a site (`--views`: of every view). Reads the API's JSON only."""

from __future__ import annotations

from typing import Any


def view_mark(view: dict[str, Any]) -> str:
    """What follows a vantage's state in a table cell: nothing while its view is fresh."""
    return f", stale {view.get('age', 0):.1f}s" if view.get("stale") else ""


def views_block(services: list[dict[str, Any]], every: bool = False) -> list[str]:
    """Lines: one per vantage with its view's age, then the reasons (see the module docstring)."""
    ages: dict[str, dict[str, Any]] = {}
    for service in services:
        for vantage, view in (service.get("views") or {}).items():
            if vantage not in ages or view.get("age", 0) > ages[vantage].get("age", 0):
                ages[vantage] = view
    if not ages:
        return []
    width = max(len(vantage) for vantage in ages)
    lines = ["views (each vantage's, as this instance last received it):"]
    for vantage, view in ages.items():
        lines.append(f"  {vantage:<{width}}  {_freshness(view)}")
    reasons = [line for service in services for line in _reasons(service, every)]
    if reasons:
        scope = ":" if every else " (where a vantage sees a site otherwise than this instance):"
        lines.append(f"view reasons{scope}")
        lines.extend(reasons)
    return lines


def _freshness(view: dict[str, Any]) -> str:
    age = float(view.get("age", 0))
    lease = view.get("lease_ttl")
    text = f"received {age:.1f}s ago"
    if view.get("stale"):
        text += (f" - STALE: older than its lease ({lease:g}s): that instance may be gone, or this one cut off "
                 "from etcd")
    return text


def _reasons(service: dict[str, Any], every: bool) -> list[str]:
    lines = []
    for site, health in service["sites"].items():
        for vantage, view in (service.get("views") or {}).items():
            seen = (view.get("sites") or {}).get(site)
            if seen is None or (not every and seen.get("state") == health.get("state")):
                continue
            stale = " (stale view)" if view.get("stale") else ""
            lines.append(f"  {service['name']} in {site}, as {vantage} sees it{stale}: {seen.get('state')}: "
                         f"{seen.get('reason', '')}")
    return lines
