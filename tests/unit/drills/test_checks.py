"""The drill preconditions (bcd.drills.checks), pure: each refusal with its reason, in the order they are
checked, and what ends a hold."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bcd.drills.checks import Facts, degraded, refusal, unwell
from bcd.health import SiteHealth
from bcd.model import ServiceStatus, SiteState


def site(name: str, state: SiteState = SiteState.UP, **fields: object) -> SiteHealth:
    return replace(SiteHealth.new("payroll", name, 0.0), base=state, reason=f"{name} {state}", **fields)


UP = {"dorset": site("dorset"), "hampshire": site("hampshire")}
READY = Facts("payroll", "round_trip", ServiceStatus.OK, "dorset", UP)

REFUSALS = [
    ("no failback runbook", replace(READY, unfit="a round trip needs a failback runbook"),
     "payroll: a round trip needs a failback runbook"),
    ("automatic failback", replace(READY, unfit="its failback is automatic: (bcd.config.drills.unfit)"),
     "payroll: its failback is automatic"),
    ("a drill under way", replace(READY, drilling="payroll@1"), "drill payroll@1 of payroll is under way"),
    ("a run in progress", replace(READY, running=7), "run 7 of payroll is in progress"),
    ("a failed run", replace(READY, unacknowledged=6), "run 6 of payroll needs acknowledging first"),
    ("maintenance", replace(READY, sites={**UP, "hampshire": site("hampshire", maintenance_until=9.0)}),
     "site hampshire of payroll is in maintenance"),
    ("flapping", replace(READY, sites={**UP, "dorset": site("dorset", flapping=True)}),
     "site dorset of payroll is flapping"),
    ("standby down", replace(READY, sites={**UP, "hampshire": site("hampshire", SiteState.DOWN)}),
     "site hampshire of payroll is down, not up (hampshire down)"),
    ("standby unknown", replace(READY, sites={**UP, "hampshire": site("hampshire", SiteState.UNKNOWN)}),
     "site hampshire of payroll is unknown, not up"),
    ("service not ok", replace(READY, status=ServiceStatus.BLOCKED), "payroll is blocked, not ok"),
    ("blackout", replace(READY, blackout="q: 2026-12-20..2027-01-04"),
     "payroll is in a drill blackout (q: 2026-12-20..2027-01-04)"),
]


@pytest.mark.parametrize(("facts", "expected"), [(f, e) for _, f, e in REFUSALS], ids=[n for n, _, _ in REFUSALS])
def test_each_precondition_refuses_with_its_reason(facts: Facts, expected: str) -> None:
    why = refusal(facts)
    assert why is not None and why.startswith(expected), why


def test_a_service_ready_for_it_may_be_drilled() -> None:
    assert refusal(READY) is None
    assert refusal(replace(READY, kind="runbook")) is None  # (an automatic failback: tests/unit/config)


def test_a_hold_ends_when_the_target_or_the_origin_leaves_up() -> None:
    assert degraded(UP, "dorset", "hampshire") is None
    assert degraded({**UP, "hampshire": site("hampshire", SiteState.DEGRADED)}, "dorset", "hampshire") == (
        "target hampshire is degraded (hampshire degraded)")
    assert degraded({**UP, "dorset": site("dorset", SiteState.DOWN)}, "dorset", "hampshire") == (
        "origin dorset is down (dorset down)")


def test_a_runbook_drill_stops_when_any_site_of_its_service_leaves_up() -> None:
    assert unwell(UP) is None
    assert unwell({**UP, "hampshire": site("hampshire", SiteState.DOWN)}) == "site hampshire is down (hampshire down)"
    assert unwell({**UP, "dorset": site("dorset", SiteState.UNKNOWN)}) == "site dorset is unknown (dorset unknown)"
