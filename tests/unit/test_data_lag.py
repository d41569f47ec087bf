"""The `rpo_exceeded` guard (pure, `bcd.data_lag` through `bcd.policy`): a table of data lags → decision for an
automatic failover and verdict for an operator's request, and reading a lag out of an observation."""

from __future__ import annotations

import pytest

from bcd.data_lag import measured
from bcd.model import Guard, Observation, ProbeKey, Result, RunKind, ServiceStatus
from bcd.policy import Request, check_request, decide
from bcd.rpo import Lag
from tests.unit.test_policy import DOWN, NOW, UP, snap

RPO = 5.0
SOURCE = "probe replica, value lag"


def lag(value: float | None, age: float = 1.0) -> Lag:
    if value is None:
        return Lag(SOURCE, 20.0)
    return Lag(SOURCE, 20.0, value, NOW - age)


AUTOMATIC = [
    # (id, rpo, lag of hampshire, status, guard, words in the reason)
    ("within rpo", RPO, lag(2.0), ServiceStatus.FAILING_OVER, None, "starting failover to hampshire"),
    ("exactly rpo", RPO, lag(5.0), ServiceStatus.FAILING_OVER, None, "starting failover to hampshire"),
    ("beyond rpo", RPO, lag(12.5, age=3), ServiceStatus.BLOCKED, Guard.RPO_EXCEEDED,
     "failover blocked (data lag of hampshire 12.5s (probe replica, value lag, 3s ago) exceeds rpo 5s)"),
    ("never measured", RPO, lag(None), ServiceStatus.BLOCKED, Guard.RPO_EXCEEDED,
     "data lag of hampshire unknown (probe replica, value lag: not measured yet); rpo 5s"),
    ("measured too long ago", RPO, lag(1.0, age=21), ServiceStatus.BLOCKED, Guard.RPO_EXCEEDED,
     "data lag of hampshire unknown (last 1s (probe replica, value lag, 21s ago), older than 20s); rpo 5s"),
    ("no rpo: no guard", None, lag(500.0), ServiceStatus.FAILING_OVER, None, "starting failover to hampshire"),
    ("site measures no lag: no guard", RPO, None, ServiceStatus.FAILING_OVER, None, "starting failover"),
]


@pytest.mark.parametrize(("rpo", "hampshire", "status", "guard", "words"),
                         [case[1:] for case in AUTOMATIC], ids=[case[0] for case in AUTOMATIC])
def test_automatic_failover_is_blocked_by_data_lag_beyond_rpo(rpo: float | None, hampshire: Lag | None,
                                                             status: ServiceStatus, guard: Guard | None,
                                                             words: str) -> None:
    lags = {} if hampshire is None else {"hampshire": hampshire}
    decision = decide(snap(DOWN, UP, rpo=rpo, lags=lags), NOW)
    assert (decision.status, decision.guard) == (status, guard)
    assert words in decision.reason
    assert (decision.action is None) == (guard is not None)


def test_the_lag_of_the_standby_picked_counts_not_another_sites() -> None:
    decision = decide(snap(DOWN, UP, rpo=RPO, lags={"dorset": lag(100.0), "hampshire": lag(1.0)}), NOW)
    assert decision.status is ServiceStatus.FAILING_OVER


def test_an_automatic_failback_waits_while_home_lags_beyond_rpo() -> None:
    away = {"active": "hampshire", "home": "dorset", "failback": snap(UP).failover}
    assert decide(snap(UP, UP, **away, rpo=RPO, lags={"dorset": lag(1.0)}), NOW).action is not None
    held = decide(snap(UP, UP, **away, rpo=RPO, lags={"dorset": lag(60.0)}), NOW)
    assert (held.status, held.action) == (ServiceStatus.OK, None)


def test_an_operator_is_refused_beyond_rpo_and_a_forced_run_names_the_lag_accepted() -> None:
    lagging = snap(DOWN, UP, rpo=RPO, lags={"hampshire": lag(42.0, age=2)})
    refused = check_request(lagging, Request(RunKind.FAILOVER), NOW)
    assert (refused.to_site, refused.guard) == (None, Guard.RPO_EXCEEDED)
    assert refused.reason == ("data lag of hampshire 42s (probe replica, value lag, 2s ago) exceeds rpo 5s "
                              "(use force)")
    forced = check_request(lagging, Request(RunKind.FAILOVER, force=True), NOW)
    assert forced.to_site == "hampshire"
    assert forced.accepted == ("accepted: data lag of hampshire 42s (probe replica, value lag, 2s ago) exceeds "
                               "rpo 5s")
    within = snap(DOWN, UP, rpo=RPO, lags={"hampshire": lag(1.0)})
    assert check_request(within, Request(RunKind.FAILOVER), NOW).to_site == "hampshire"
    assert check_request(within, Request(RunKind.FAILOVER, force=True), NOW).accepted == ""


def observation(perfdata: tuple[tuple[str, str], ...], result: Result = Result.OK) -> Observation:
    return Observation(ProbeKey("payroll", "hampshire", "replica"), result, 0.01, "OK - replaying", NOW - 1,
                       perfdata=perfdata)


@pytest.mark.parametrize(("perfdata", "value", "missing"), [
    ((("lag", "2.5s;5;10"),), 2.5, ""),
    ((("lag", "250ms"),), 0.25, ""),
    ((("bytes", "10B"), ("lag", "7")), 7.0, ""),
    ((("lag", "U"),), None, "no number (ok: OK - replaying)"),
    ((("other", "1s"),), None, "not reported (ok: OK - replaying)"),
    ((("lag", "3us"),), 3e-6, ""),
    ((("lag", "5MB"),), None, "not a time: 5MB (ok: OK - replaying)"),  # a byte count is no lag in seconds
    ((("lag", "50%;80;90"),), None, "not a time: 50% (ok: OK - replaying)"),
])
def test_a_lag_is_read_from_the_probe_value_in_seconds(perfdata: tuple[tuple[str, str], ...],
                                                        value: float | None, missing: str) -> None:
    read = measured(Lag(SOURCE, 20.0), observation(perfdata), "lag")
    assert read.value == value
    assert read.at == (NOW - 1 if value is not None else None)
    if missing:
        assert read.missing == missing


def test_a_standby_lagging_past_the_rpo_is_passed_over_for_another_one_that_is_up() -> None:
    # hypothesis found it: hampshire (first in order) lags unknown, kent measures none: kent is the target
    decision = decide(snap(DOWN, UP, UP, rpo=RPO, lags={"hampshire": lag(None)}), NOW)
    assert decision.action is not None and decision.action.to_site == "kent", decision
    only = decide(snap(DOWN, UP, DOWN, rpo=RPO, lags={"hampshire": lag(None)}), NOW)
    assert (only.status, only.guard) == (ServiceStatus.BLOCKED, Guard.RPO_EXCEEDED)
