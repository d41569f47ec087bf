"""The pure health machine: tables of observations → states and transitions, flapping, maintenance, restore,
reload, the per-service status, and a hypothesis state machine checking the invariants."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bcd.health import (
    CODES,
    FrozenMap,
    ProbeTrack,
    SiteHealth,
    SiteRules,
    Thresholds,
    best_standby,
    doubt,
    end_maintenance,
    evaluate_service,
    observe,
    percent_state_change,
    reconfigure,
    start_maintenance,
    tick,
)
from bcd.model import HURRY, SETTLED, SUSPECT, Observation, ProbeKey, Result, ServiceStatus, SiteState, Transition

OK, WARN, FAIL = Result.OK, Result.WARN, Result.FAIL
UNKNOWN, UP, DEGRADED, DOWN = SiteState.UNKNOWN, SiteState.UP, SiteState.DEGRADED, SiteState.DOWN
FLAPPING, MAINTENANCE = SiteState.FLAPPING, SiteState.MAINTENANCE

ONE = SiteRules({"health": Thresholds(rise=2, fall=3)})
TWO = SiteRules({"health": Thresholds(rise=2, fall=3), "tls": Thresholds(rise=2, fall=2)})
MIXED = SiteRules({"health": Thresholds(rise=2, fall=3), "tls": Thresholds(rise=1, fall=2)})
TWITCHY = SiteRules({"health": Thresholds(rise=1, fall=1)})
REASONS = {OK: "HTTP 200", WARN: "certificate expires in 5 days", FAIL: "HTTP 503"}


def obs(probe: str, result: Result, at: float, reason: str | None = None, site: str = "dorset") -> Observation:
    return Observation(ProbeKey("payroll", site, probe), result, 0.01, reason or REASONS[result], at)


def restored(base: SiteState, *, flapping: bool = False, until: float | None = None) -> SiteHealth:
    return SiteHealth.restore(
        "payroll",
        "dorset",
        base=base,
        flapping=flapping,
        maintenance_until=until,
        maintenance_reason="patching" if until is not None else "",
        since=0.0,
        reason="restored",
    )


def start(base: SiteState) -> SiteHealth:
    return SiteHealth.new("payroll", "dorset", 0.0) if base is UNKNOWN else restored(base)


def feed(
    health: SiteHealth, rules: SiteRules, steps: list[tuple[str, Result]], t0: float = 1.0
) -> tuple[SiteHealth, list[tuple[float, Transition]]]:
    """Observe each (probe, result) one second apart; collect (time, transition)."""
    transitions = []
    for i, (probe, result) in enumerate(steps):
        health, transition = observe(health, obs(probe, result, t0 + i), rules)
        if transition is not None:
            transitions.append((t0 + i, transition))
    return health, transitions


def h(*results: Result) -> list[tuple[str, Result]]:
    return [("health", result) for result in results]


# ---------------------------------------------------------------------------------------------------------
# Rise and fall

CASES = [
    # (id, start, rules, steps, final state, [(step index, from, to, reason)])
    ("unknown-rises", UNKNOWN, ONE, h(OK, OK), UP, [(1, UNKNOWN, UP, "all probes passing")]),
    ("unknown-one-ok-not-enough", UNKNOWN, ONE, h(OK), UNKNOWN, []),
    (
        "unknown-warn-counts-as-success",
        UNKNOWN,
        ONE,
        h(WARN, OK),
        UP,
        [(1, UNKNOWN, UP, "all probes passing")],
    ),
    ("unknown-ok-reset-by-fail", UNKNOWN, ONE, h(OK, FAIL, OK), UNKNOWN, []),
    ("unknown-soft-failures-stay-unknown", UNKNOWN, ONE, h(FAIL, FAIL), UNKNOWN, []),
    (
        "unknown-falls",
        UNKNOWN,
        ONE,
        h(FAIL, FAIL, FAIL),
        DOWN,
        [(2, UNKNOWN, DOWN, "3 consecutive failures of health: HTTP 503")],
    ),
    (
        "unknown-waits-for-probe-not-yet-run",
        UNKNOWN,
        TWO,
        [("health", OK), ("health", OK), ("health", OK), ("tls", OK), ("tls", OK)],
        UP,
        [(4, UNKNOWN, UP, "all probes passing")],
    ),
    ("up-warn-stays-up", UP, ONE, h(WARN, WARN, OK), UP, []),
    (
        "up-soft-then-hard",
        UP,
        ONE,
        h(FAIL, FAIL, FAIL, FAIL),
        DOWN,
        [
            (0, UP, DEGRADED, "health failing (1 of 3): HTTP 503"),
            (2, DEGRADED, DOWN, "3 consecutive failures of health: HTTP 503"),
        ],
    ),
    (
        "up-soft-then-recovered",
        UP,
        ONE,
        h(FAIL, OK),
        UP,
        [
            (0, UP, DEGRADED, "health failing (1 of 3): HTTP 503"),
            (1, DEGRADED, UP, "recovered: health passed"),
        ],
    ),
    (
        "up-fall-1-goes-straight-down",
        UP,
        TWITCHY,
        h(FAIL),
        DOWN,
        [(0, UP, DOWN, "1 failure of health: HTTP 503")],
    ),
    (
        "up-other-probe-falls",
        UP,
        TWO,
        [("health", FAIL), ("tls", FAIL), ("tls", FAIL)],
        DOWN,
        [
            (0, UP, DEGRADED, "health failing (1 of 3): HTTP 503"),
            (2, DEGRADED, DOWN, "2 consecutive failures of tls: HTTP 503"),
        ],
    ),
    (
        "degraded-stays-while-any-probe-fails",
        UP,
        TWO,
        [("health", FAIL), ("tls", OK), ("health", OK)],
        UP,
        [
            (0, UP, DEGRADED, "health failing (1 of 3): HTTP 503"),
            (2, DEGRADED, UP, "recovered: health passed"),
        ],
    ),
    ("degraded-restored-recovers", DEGRADED, ONE, h(OK), UP, [(0, DEGRADED, UP, "recovered: health passed")]),
    (
        "degraded-restored-falls",
        DEGRADED,
        ONE,
        h(FAIL, FAIL, FAIL),
        DOWN,
        [(2, DEGRADED, DOWN, "3 consecutive failures of health: HTTP 503")],
    ),
    (
        "down-rises",
        DOWN,
        ONE,
        h(OK, OK),
        UP,
        [(1, DOWN, UP, "2 consecutive successes of every probe")],
    ),
    ("down-rise-interrupted", DOWN, ONE, h(OK, FAIL, OK), DOWN, []),
    (
        "down-rise-with-warn",
        DOWN,
        ONE,
        h(WARN, WARN),
        UP,
        [(1, DOWN, UP, "2 consecutive successes of every probe")],
    ),
    (
        "down-rise-1",
        DOWN,
        TWITCHY,
        h(OK),
        UP,
        [(0, DOWN, UP, "1 success of every probe")],
    ),
    (
        "down-rise-needs-every-probe",
        DOWN,
        MIXED,
        [("health", OK), ("health", OK), ("health", OK), ("tls", OK)],
        UP,
        [(3, DOWN, UP, "consecutive successes of every probe reached its rise (health 2, tls 1)")],
    ),
    ("down-soft-failure-stays-down", DOWN, TWO, [("tls", OK), ("tls", OK), ("health", FAIL)], DOWN, []),
]


@pytest.mark.parametrize(
    ("begin", "rules", "steps", "final", "expected"), [case[1:] for case in CASES], ids=[c[0] for c in CASES]
)
def test_rise_and_fall(
    begin: SiteState,
    rules: SiteRules,
    steps: list[tuple[str, Result]],
    final: SiteState,
    expected: list[tuple[int, SiteState, SiteState, str]],
) -> None:
    health, transitions = feed(start(begin), rules, steps)
    assert health.state is final
    assert [(at, t.from_state, t.to_state, t.reason) for at, t in transitions] == [
        (1.0 + index, before, after, reason) for index, before, after, reason in expected
    ]
    for at, transition in transitions:
        assert (transition.service, transition.site, transition.at) == ("payroll", "dorset", at)
    if transitions:
        assert (health.since, health.reason) == (transitions[-1][0], transitions[-1][1].reason)


def test_down_reason_names_the_failing_probe_last_reason() -> None:
    health = start(UP)
    for i, reason in enumerate(["HTTP 503", "connection refused", "timeout after 3s"]):
        health, transition = observe(health, obs("health", FAIL, i, reason), ONE)
    assert transition is not None
    assert transition.reason == "3 consecutive failures of health: timeout after 3s"


def test_track_counts_and_remembers() -> None:
    health, _ = feed(start(UNKNOWN), ONE, h(FAIL, FAIL, OK, WARN))
    assert health.probes["health"] == ProbeTrack(
        fails=0, oks=2, last=WARN, reason=REASONS[WARN], at=4.0, history="ffow"
    )
    health, _ = feed(health, ONE, h(FAIL), t0=5.0)
    assert (health.probes["health"].fails, health.probes["health"].oks) == (1, 0)


def test_history_keeps_the_last_21_results() -> None:
    health, _ = feed(start(UP), ONE, h(*[FAIL] * 5, *[OK] * 21))
    assert health.probes["health"].history == "o" * 21
    assert health.probes["health"].percent is ProbeTrack().percent  # steady: the shared 0.0, not a float each


def test_unknown_probe_is_ignored() -> None:
    health = start(UP)
    assert observe(health, obs("ghost", FAIL, 1.0), ONE) == (health, None)


def test_observation_for_another_site_is_refused() -> None:
    with pytest.raises(ValueError, match="hampshire"):
        observe(start(UP), obs("health", OK, 1.0, site="hampshire"), ONE)


def test_values_are_immutable_and_hashable() -> None:
    health, _ = feed(start(UP), TWO, [("health", OK), ("tls", FAIL)])
    assert hash(health) == hash(feed(start(UP), TWO, [("health", OK), ("tls", FAIL)])[0])
    assert hash(TWO) == hash(SiteRules({"health": Thresholds(2, 3), "tls": Thresholds(2, 2)}))
    assert isinstance(health.probes, FrozenMap)
    with pytest.raises(TypeError):
        health.probes["x"] = ProbeTrack()  # type: ignore[index]


def test_frozen_maps_with_the_same_keys_share_their_index() -> None:
    """One per site, tens of thousands of them: the sites with the same probes keep one index between them."""
    first, _ = feed(start(UP), TWO, [("health", OK), ("tls", FAIL)])
    second, _ = feed(start(UP), TWO, [("tls", OK), ("health", FAIL)])
    assert first.probes._index is not second.probes._index  # another order
    third, _ = feed(start(UP), TWO, [("health", FAIL), ("tls", OK)])
    assert first.probes._index is third.probes._index
    assert list(first.probes) == ["health", "tls"] and first.probes["tls"].fails == 1
    changed = FrozenMap({"a": 1, "b": 2}).set("b", 3).set("c", 4)
    assert changed == {"a": 1, "b": 3, "c": 4} and list(changed) == ["a", "b", "c"]
    assert "c" in changed and "d" not in changed and changed.get("d") is None
    assert hash(changed) == hash(FrozenMap({"c": 4, "b": 3, "a": 1}))
    assert repr(changed) == "FrozenMap({'a': 1, 'b': 3, 'c': 4})"


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Thresholds(rise=0, fall=3)
    with pytest.raises(ValueError, match="flap_low"):
        SiteRules({"health": Thresholds(2, 3)}, flap_high=20, flap_low=25)
    with pytest.raises(ValueError, match="base state"):
        restored(FLAPPING)


# ---------------------------------------------------------------------------------------------------------
# Restore after a restart


@pytest.mark.parametrize(
    ("base", "rules", "steps"),
    [
        (DOWN, ONE, h(*[FAIL] * 6)),
        (DOWN, TWO, [("health", FAIL), ("tls", FAIL)] * 3),
        (UP, ONE, h(*[OK] * 6)),
        (UP, TWO, [("health", OK), ("tls", WARN)] * 3),
        (UP, TWO, h(OK)),  # tls has not run yet: still up, nothing to say
    ],
    ids=["down-failing", "down-failing-2", "up-passing", "up-passing-2", "up-one-probe-so-far"],
)
def test_restored_site_confirmed_by_probes_announces_nothing(
    base: SiteState, rules: SiteRules, steps: list[tuple[str, Result]]
) -> None:
    health, transitions = feed(restored(base), rules, steps)
    assert transitions == []
    assert (health.state, health.since, health.reason) == (base, 0.0, "restored")


def test_restore_keeps_the_persisted_fields() -> None:
    health = restored(UP, flapping=True, until=100.0)
    assert health.state is MAINTENANCE
    assert (health.base, health.flapping, health.maintenance_reason, health.effective) == (
        UP,
        True,
        "patching",
        FLAPPING,
    )
    assert health.probes == {}
    assert (
        SiteHealth.restore(
            "payroll",
            "dorset",
            base="down",
            flapping=False,
            maintenance_until=None,
            maintenance_reason="",
            since=5.0,
            reason="x",
        ).state
        is DOWN
    )


def test_new_site_is_unknown() -> None:
    health = SiteHealth.new("payroll", "dorset", 42.0)
    assert (health.state, health.base, health.since, health.flapping) == (UNKNOWN, UNKNOWN, 42.0, False)


# ---------------------------------------------------------------------------------------------------------
# Flapping


def weights(*changes_at: int) -> float:
    """Nagios weighted changes written out: a change between results x and x+1 weighs 0.75 + x*0.5/19."""
    return sum(0.75 + x * 0.5 / 19 for x in changes_at) * 100 / 20


@pytest.mark.parametrize(
    ("history", "percent"),
    [
        ([], 0.0),
        ([FAIL], 0.0),
        ([OK] * 21, 0.0),
        ([OK, FAIL] * 10 + [OK], 100.0),
        ([OK] * 15 + [FAIL, OK] * 3, 35.526316),  # changes at x = 14..19
        ([OK, FAIL] * 3 + [OK] * 15, 24.473684),  # the same changes, old: x = 0..5
        ([OK, WARN, OK], 7.631579),  # warn is a state of its own
        ([FAIL, WARN, WARN], 3.75),
        ([FAIL] * 30 + [OK], 6.25),  # only the last 21 count: one change at x = 19
    ],
)
def test_percent_state_change(history: list[Result], percent: float) -> None:
    assert percent_state_change(history) == pytest.approx(percent, abs=1e-6)


def test_percent_state_change_matches_the_weights_written_out() -> None:
    assert percent_state_change([OK] * 15 + [FAIL, OK] * 3) == pytest.approx(weights(14, 15, 16, 17, 18, 19))
    assert percent_state_change([OK, FAIL] * 4 + [OK]) == pytest.approx(weights(*range(8)))


def test_flapping_starts_above_high_and_stops_below_low() -> None:
    # rise 1 / fall 1: every alternation is an up/down transition, until the changes cross 30 %
    alternating = h(*[FAIL, OK] * 4, FAIL)
    health, transitions = feed(start(UP), TWITCHY, alternating)
    assert [t.to_state for _, t in transitions] == [DOWN, UP] * 4 + [FLAPPING]
    at, flap = transitions[-1]
    assert weights(*range(7)) < 30 < weights(*range(8)) == pytest.approx(33.684211)
    assert (flap.from_state, at, health.since, health.base) == (UP, 9.0, 9.0, DOWN)
    assert flap.reason == "flapping: health changed state 33.7% of the last 9 checks (threshold 30%)"

    # steady successes: base recovers silently underneath, flapping ends once the old changes weigh < 25 %
    health, transitions = feed(health, TWITCHY, h(*[OK] * 15), t0=10.0)
    assert health.base is UP and health.flapping is False
    [(at, end)] = transitions
    # history now: results 4..24 of which changes remain at x = 0..5
    assert at == 24.0 and weights(*range(6)) < 25 < weights(*range(7))
    assert health.probes["health"].percent == pytest.approx(24.473684)
    assert (end.from_state, end.to_state) == (FLAPPING, UP)
    assert end.reason == "no longer flapping: health changed state 24.5% of the last 21 checks (below 25%)"


def test_flapping_ends_into_a_base_changing_at_the_same_time() -> None:
    health = restored(DOWN, flapping=True)
    health, transition = observe(health, obs("health", OK, 1.0), TWITCHY)
    assert transition is not None
    assert (transition.from_state, transition.to_state) == (FLAPPING, UP)
    assert transition.reason == (
        "no longer flapping: health changed state 0% of the last 1 checks (below 25%); 1 success of every probe"
    )


def test_flapping_on_warn_alone_while_base_stays_up() -> None:
    health, transitions = feed(start(UP), ONE, h(*[OK, WARN] * 5))
    assert health.base is UP
    assert [(t.from_state, t.to_state) for _, t in transitions] == [(UP, FLAPPING)]
    assert transitions[0][1].reason.startswith("flapping: health changed state 33.7% of the last 9 checks")


def test_flapping_needs_every_probe_quiet_to_end() -> None:
    rules = SiteRules({"health": Thresholds(1, 1), "tls": Thresholds(1, 1)})
    health, _ = feed(start(UP), rules, [("tls", OK), *h(*[FAIL, OK] * 5)])
    assert health.state is FLAPPING
    health, transitions = feed(health, rules, [("tls", OK)] * 30, t0=100.0)
    assert transitions == [] and health.state is FLAPPING
    health, transitions = feed(health, rules, h(*[OK] * 21), t0=200.0)
    assert [t.to_state for _, t in transitions] == [UP]


def test_flapping_is_not_flapping_at_exactly_the_threshold() -> None:
    # the comparison is strict: a percentage equal to flap_high does not start flapping
    rules = SiteRules({"health": Thresholds(1, 1)}, flap_high=35.526316, flap_low=10.0)
    health, transitions = feed(start(UP), rules, h(*[OK] * 15, *[FAIL, OK] * 3))
    assert health.flapping is False
    assert [t.to_state for _, t in transitions] == [DOWN, UP] * 3


# ---------------------------------------------------------------------------------------------------------
# Maintenance


def test_maintenance_overlays_then_expires() -> None:
    health, transition = start_maintenance(start(UP), until=100.0, reason="patching", now=10.0)
    assert transition == Transition(
        "payroll", "dorset", UP, MAINTENANCE, "maintenance until 1970-01-01T00:01:40Z: patching", 10.0
    )
    assert (health.state, health.since, health.maintenance_reason) == (MAINTENANCE, 10.0, "patching")

    health, transitions = feed(health, ONE, h(FAIL, FAIL, FAIL), t0=20.0)
    assert transitions == [] and health.base is DOWN and health.state is MAINTENANCE

    assert tick(health, 99.9) == (health, None)
    health, transition = tick(health, 100.0)
    assert transition == Transition("payroll", "dorset", MAINTENANCE, DOWN, "maintenance ended (expired)", 100.0)
    assert (health.state, health.since, health.maintenance_until, health.maintenance_reason) == (
        DOWN,
        100.0,
        None,
        "",
    )


def test_maintenance_hides_flapping_until_it_ends() -> None:
    health, _ = start_maintenance(start(UP), until=1000.0, reason="chaos test", now=0.0)
    health, transitions = feed(health, TWITCHY, h(*[FAIL, OK] * 6))
    assert transitions == [] and health.flapping and health.effective is FLAPPING
    health, transition = end_maintenance(health, now=50.0)
    assert transition is not None
    assert (transition.from_state, transition.to_state, transition.reason) == (
        MAINTENANCE,
        FLAPPING,
        "maintenance ended by operator",
    )


def test_maintenance_extend_end_and_refuse() -> None:
    health, _ = start_maintenance(start(DOWN), until=100.0, reason="", now=0.0)
    assert health.reason == "maintenance until 1970-01-01T00:01:40Z: no reason given"
    extended, transition = start_maintenance(health, until=200.0, reason="longer", now=50.0)
    assert transition is None and extended.maintenance_until == 200.0 and extended.since == 0.0
    ended, transition = end_maintenance(extended, now=60.0, reason="done early")
    assert transition is not None and (transition.to_state, transition.reason) == (DOWN, "done early")
    assert end_maintenance(ended, now=70.0) == (ended, None)
    assert tick(ended, 1e9) == (ended, None)
    with pytest.raises(ValueError, match="future"):
        start_maintenance(ended, until=70.0, reason="late", now=70.0)


# ---------------------------------------------------------------------------------------------------------
# Reload


def test_reconfigure_drops_removed_probes_only() -> None:
    health, _ = feed(start(UP), TWO, [("health", OK), ("tls", FAIL)])
    rules = SiteRules({"health": Thresholds(2, 3), "dns": Thresholds(1, 1)})
    after = reconfigure(health, rules)
    assert dict(after.probes) == {"health": health.probes["health"]}
    assert (after.base, after.since, after.reason) == (health.base, health.since, health.reason)
    # the dropped probe's failure no longer holds the site degraded (only down/unknown wait for every rise)
    after, transition = observe(after, obs("health", OK, 10.0), rules)
    assert transition is not None and transition.to_state is UP


# ---------------------------------------------------------------------------------------------------------
# Per service


def site(
    name: str,
    base: SiteState,
    *,
    flapping: bool = False,
    maintenance: bool = False,
    tracks: dict[str, ProbeTrack] | None = None,
    reason: str = "restored",
) -> SiteHealth:
    return SiteHealth(
        "payroll",
        name,
        base,
        flapping,
        1000.0 if maintenance else None,
        "patching" if maintenance else "",
        0.0,
        reason,
        tracks or {},
    )


FAILING = {"health": ProbeTrack(fails=3, last=FAIL, reason="HTTP 503"), "tls": ProbeTrack(oks=4, last=OK)}
SOFT = {"health": ProbeTrack(fails=1, last=FAIL, reason="HTTP 503")}
FLAPPY = {"health": ProbeTrack(history="of" * 5 + "o")}

SERVICE_CASES = [
    ("up", [site("dorset", UP)], ServiceStatus.OK, "payroll: active site dorset up"),
    (
        "up-in-maintenance",
        [site("dorset", UP, maintenance=True)],
        ServiceStatus.OK,
        "payroll: active site dorset up",
    ),
    (
        "unknown",
        [site("dorset", UNKNOWN, reason="no observation yet"), site("hampshire", UP)],
        ServiceStatus.UNKNOWN,
        "payroll: active site dorset unknown (no observation yet)",
    ),
    (
        "degraded",
        [site("dorset", DEGRADED, tracks=SOFT), site("hampshire", UP)],
        ServiceStatus.AT_RISK,
        "payroll: active site dorset degraded (1 failure of health: HTTP 503)",
    ),
    (
        "flapping",
        [site("dorset", UP, flapping=True, tracks=FLAPPY), site("hampshire", UP)],
        ServiceStatus.AT_RISK,
        "payroll: active site dorset flapping (health changed state 43.4% of the last 11 checks)",
    ),
    (
        "flapping-in-maintenance-down",
        [site("dorset", DOWN, flapping=True, maintenance=True, reason="flapping: x"), site("hampshire", UP)],
        ServiceStatus.AT_RISK,
        "payroll: active site dorset flapping (flapping: x)",
    ),
    (
        "down-standby-up",
        [site("dorset", DOWN, tracks=FAILING), site("hampshire", UP)],
        ServiceStatus.FAILOVER_NEEDED,
        "payroll: active site dorset down (3 consecutive failures of health: HTTP 503); standby hampshire up",
    ),
    (
        "down-restored-no-tracks",
        [site("dorset", DOWN, reason="3 consecutive failures of health: HTTP 503"), site("hampshire", UP)],
        ServiceStatus.FAILOVER_NEEDED,
        "payroll: active site dorset down (3 consecutive failures of health: HTTP 503); standby hampshire up",
    ),
    (
        "down-in-maintenance-standby-in-maintenance",
        [site("dorset", DOWN, maintenance=True, tracks=FAILING), site("hampshire", UP, maintenance=True)],
        ServiceStatus.FAILOVER_NEEDED,
        "payroll: active site dorset down (3 consecutive failures of health: HTTP 503); standby hampshire up",
    ),
    (
        "down-first-up-standby-wins",
        [
            site("kent", UP, flapping=True),
            site("dorset", DOWN, tracks=FAILING),
            site("hampshire", DEGRADED),
            site("wales", UP),
            site("cornwall", UP),
        ],
        ServiceStatus.FAILOVER_NEEDED,
        "payroll: active site dorset down (3 consecutive failures of health: HTTP 503); standby wales up",
    ),
    (
        "down-standby-flapping",
        [site("dorset", DOWN), site("hampshire", UP, flapping=True)],
        ServiceStatus.UNAVAILABLE,
        "payroll: no site up: dorset down, hampshire flapping",
    ),
    (
        "down-everywhere-else-not-up",
        [site("dorset", DOWN), site("hampshire", DEGRADED), site("kent", UNKNOWN), site("wales", DOWN)],
        ServiceStatus.UNAVAILABLE,
        "payroll: no site up: dorset down, hampshire degraded, kent unknown, wales down",
    ),
    ("down-alone", [site("dorset", DOWN)], ServiceStatus.UNAVAILABLE, "payroll: no site up: dorset down"),
]


@pytest.mark.parametrize(
    ("sites", "status", "reason"), [c[1:] for c in SERVICE_CASES], ids=[c[0] for c in SERVICE_CASES]
)
def test_evaluate_service(sites: list[SiteHealth], status: ServiceStatus, reason: str) -> None:
    assert evaluate_service("dorset", {s.site: s for s in sites}) == (status, reason)


# The statuses of a run in progress or a guard come from the decision policy, never from health alone.
POLICY_STATUSES = {ServiceStatus.FAILOVER_PENDING, ServiceStatus.FAILING_OVER, ServiceStatus.BLOCKED}


def test_evaluate_service_covers_every_status() -> None:
    assert {c[2] for c in SERVICE_CASES} == set(ServiceStatus) - POLICY_STATUSES


def test_evaluate_service_needs_the_active_site() -> None:
    with pytest.raises(ValueError, match="kent"):
        evaluate_service("kent", {"dorset": site("dorset", UP)})


def test_best_standby() -> None:
    sites = {"dorset": site("dorset", UP), "hampshire": site("hampshire", UP, flapping=True)}
    assert best_standby("dorset", sites) is None
    assert best_standby("hampshire", sites) == "dorset"
    assert best_standby("dorset", {**sites, "kent": site("kent", UP, maintenance=True)}) == "kent"


# ---------------------------------------------------------------------------------------------------------
# Invariants under random sequences


class HealthMachine(RuleBasedStateMachine):
    """Random observations, maintenance and ticks over two probes with random thresholds."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.rules = TWO
        self.health = SiteHealth.new("payroll", "dorset", 0.0)
        self.last_since = 0.0

    @initialize(
        base=st.sampled_from([UNKNOWN, UP, DEGRADED, DOWN]),
        flapping=st.booleans(),
        limits=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=2, max_size=2),
    )
    def setup(self, base: SiteState, flapping: bool, limits: list[tuple[int, int]]) -> None:
        self.rules = SiteRules({name: Thresholds(*pair) for name, pair in zip(("a", "b"), limits, strict=True)})
        self.health = restored(base, flapping=flapping)
        self.last_since = self.health.since

    def apply(self, result: tuple[SiteHealth, Transition | None]) -> None:
        before = self.health
        self.health, transition = result
        if transition is None:
            assert self.health.state is before.state
            assert self.health.since == before.since
        else:
            assert transition.from_state is before.state
            assert transition.to_state is self.health.state is not before.state
            assert transition.reason and transition.at == self.now
            assert self.health.since == self.now and self.health.reason == transition.reason

    @rule(
        probe=st.sampled_from(["a", "b", "ghost"]),
        result=st.sampled_from(list(Result)),
        dt=st.floats(0, 30),
    )
    def do_observe(self, probe: str, result: Result, dt: float) -> None:
        self.now += dt
        self.apply(observe(self.health, obs(probe, result, self.now), self.rules))

    @rule(dt=st.floats(0, 200))
    def do_tick(self, dt: float) -> None:
        self.now += dt
        self.apply(tick(self.health, self.now))

    @rule(length=st.floats(0.5, 120))
    def do_start_maintenance(self, length: float) -> None:
        self.apply(start_maintenance(self.health, self.now + length, "patching", self.now))

    @precondition(lambda self: self.health.maintenance_until is not None)
    @rule()
    def do_end_maintenance(self) -> None:
        self.apply(end_maintenance(self.health, self.now))

    @invariant()
    def state_is_known(self) -> None:
        assert self.health.state in set(SiteState)
        assert self.health.base in {UNKNOWN, UP, DEGRADED, DOWN}

    @invariant()
    def down_has_evidence(self) -> None:
        if self.health.base is DOWN:
            tracks = self.health.probes
            fallen = any(tracks.get(n, ProbeTrack()).fails >= t.fall for n, t in self.rules.probes.items())
            risen = all(tracks.get(n, ProbeTrack()).oks >= t.rise for n, t in self.rules.probes.items())
            assert fallen or not risen

    @invariant()
    def up_has_no_failing_probe(self) -> None:
        if self.health.base is UP:
            assert all(track.fails == 0 for track in self.health.probes.values())

    @invariant()
    def maintenance_shows(self) -> None:
        until = self.health.maintenance_until
        if until is not None and until > self.now:
            assert self.health.state is MAINTENANCE

    @invariant()
    def since_never_decreases(self) -> None:
        assert self.health.since >= self.last_since
        self.last_since = self.health.since

    @invariant()
    def tracks_are_consistent(self) -> None:
        for track in self.health.probes.values():
            assert (track.fails == 0) != (track.oks == 0)
            assert len(track.history) <= 21 and track.last is not None and track.history[-1] == CODES[track.last]
            assert 0 <= track.percent <= 100


HealthMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestHealthMachine = HealthMachine.TestCase


# ---------------------------------------------------------------------------------------------------------
# Doubt: what the scheduler runs early (fast confirmation)


@pytest.mark.parametrize(
    ("base", "results", "expected"),
    [
        (UP, [OK], SETTLED),  # steady state: normal spacing
        (UP, [FAIL], HURRY | SUSPECT),  # first failure: confirm fast, and a reason to look at the site
        (UP, [FAIL, FAIL], HURRY),
        (UP, [FAIL, FAIL, FAIL], SETTLED),  # down: confirmed, back to normal spacing
        (UP, [FAIL, OK], SETTLED),  # back up at once (degraded → up): confirmed
        (UNKNOWN, [FAIL], HURRY | SUSPECT),  # a target dead at start is confirmed fast too
        (UNKNOWN, [OK], SETTLED),  # a starting estate keeps its normal spacing
        (DOWN, [FAIL], SETTLED),  # down and failing: nothing in doubt
        (DOWN, [OK], HURRY),  # recovering toward up: rise confirmed fast
        (DOWN, [OK, OK], SETTLED),  # up again
        (DOWN, [OK, FAIL], SETTLED),
    ],
)
def test_doubt_after_each_result(base: SiteState, results: list[Result], expected: int) -> None:
    health, _ = feed(start(base), ONE, h(*results))
    assert doubt(health, "health", ONE) == expected


def test_a_second_probe_failing_on_a_down_site_is_not_in_doubt() -> None:
    health, _ = feed(start(UP), TWO, [("tls", FAIL), ("tls", FAIL), ("health", FAIL)])
    assert health.base is DOWN
    assert doubt(health, "health", TWO) == SETTLED


def test_a_probe_unknown_to_the_rules_is_settled() -> None:
    assert doubt(start(UP), "gone", ONE) == SETTLED


@pytest.mark.parametrize("steps", [h(FAIL, FAIL, FAIL), h(OK, FAIL, OK, OK), h(FAIL, OK, FAIL, FAIL, FAIL, OK, OK)])
def test_early_runs_change_no_state_only_the_reason(steps: list[tuple[str, Result]]) -> None:
    """rise and fall count consecutive results whatever their spacing: the same results bring the same states."""
    plain, early = start(UP), start(UP)
    for i, (probe, result) in enumerate(steps):
        plain, on_schedule = observe(plain, obs(probe, result, 1.0 + i), ONE)
        hurried = replace(obs(probe, result, 1.0 + i), early="fast confirmation every 1s")
        early, sooner = observe(early, hurried, ONE)
        assert (early.state, early.probes) == (plain.state, plain.probes)
        assert (sooner is None) == (on_schedule is None)
        if sooner is not None and on_schedule is not None:
            assert sooner.reason == f"{on_schedule.reason} (fast confirmation every 1s)"


def test_the_down_reason_says_fast_confirmation_was_used() -> None:
    health = start(UP)
    for i, early in enumerate(["", "fast confirmation every 1s", "fast confirmation every 1s"]):
        health, transition = observe(health, replace(obs("health", FAIL, 1.0 + i), early=early), ONE)
    assert transition is not None and transition.to_state is DOWN
    assert transition.reason == "3 consecutive failures of health: HTTP 503 (fast confirmation every 1s)"
