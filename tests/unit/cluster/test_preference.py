"""Who takes a service's lock for an automatic run: a witness never does, the target site's executing instance
does first, the others wait the grace (from when they first decided), and a found holder is waited for."""

from __future__ import annotations

import pytest

from bcd.cluster.preference import FORGET_AFTER, Preference
from bcd.model import Guard, RunKind
from bcd.policy import Action

TO_HAMPSHIRE = Action(RunKind.FAILOVER, "hampshire")
BOTH = ("dorset", "hampshire")


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def preference(vantage: str, clock: Clock, **settings: object) -> Preference:
    return Preference(vantage=vantage, clock=clock, grace=10.0, **settings)  # type: ignore[arg-type]


def test_the_target_sites_instance_takes_the_lock_at_once() -> None:
    assert preference("hampshire", Clock()).wait("payroll", TO_HAMPSHIRE, BOTH, None) is None


def test_another_executor_waits_the_grace_from_its_first_decision_then_takes_the_lock() -> None:
    clock = Clock()
    dorset = preference("dorset", clock)
    wait = dorset.wait("payroll", TO_HAMPSHIRE, BOTH, None)
    assert wait is not None
    assert (wait.who, wait.until, wait.guard) == ("hampshire", 110.0, None)
    assert wait.reason("payroll", TO_HAMPSHIRE) == (
        "payroll: failover to hampshire: waiting for hampshire (the executing instance in the target site; dorset "
        "takes the lock itself if hampshire has not within 10s)")
    for _ in range(9):  # decided again every second (the engine's tick): the grace is not reset
        clock.now += 1.0
        assert dorset.wait("payroll", TO_HAMPSHIRE, BOTH, None) is not None
    clock.now = 110.0
    assert dorset.wait("payroll", TO_HAMPSHIRE, BOTH, None) is None


def test_a_new_episode_or_another_action_starts_a_new_grace() -> None:
    clock = Clock()
    dorset = preference("dorset", clock)
    dorset.wait("payroll", TO_HAMPSHIRE, BOTH, None)
    clock.now += FORGET_AFTER + 1  # not decided for a while: that episode ended
    wait = dorset.wait("payroll", TO_HAMPSHIRE, BOTH, None)
    assert wait is not None and wait.until == clock.now + 10.0
    dry = Action(RunKind.FAILOVER, "hampshire", dry_run=True)
    wait = dorset.wait("payroll", dry, BOTH, None)
    assert wait is not None and wait.until == clock.now + 10.0
    assert wait.reason("payroll", dry).startswith("payroll: dry run of failover to hampshire: waiting for hampshire")
    dorset.forget("payroll")  # a run started
    clock.now += 1
    wait = dorset.wait("payroll", dry, BOTH, None)
    assert wait is not None and wait.until == clock.now + 10.0


@pytest.mark.parametrize(("executors", "prefer"), [(("dorset",), True), (BOTH, False)])
def test_no_grace_when_the_target_site_has_no_live_executor_or_preference_is_off(
    executors: tuple[str, ...], prefer: bool,
) -> None:
    assert preference("dorset", Clock(), prefer_target_site=prefer).wait("payroll", TO_HAMPSHIRE, executors,
                                                                        None) is None


def test_a_found_holder_is_waited_for_under_run_in_progress() -> None:
    wait = preference("hampshire", Clock()).wait("payroll", TO_HAMPSHIRE, BOTH, "dorset")
    assert wait is not None
    assert (wait.who, wait.guard, wait.until) == ("dorset", Guard.RUN_IN_PROGRESS, None)
    assert wait.reason("payroll", TO_HAMPSHIRE) == (
        "payroll: failover to hampshire: waiting for dorset (it holds the lock of payroll)")
    assert preference("hampshire", Clock()).wait("payroll", TO_HAMPSHIRE, BOTH, "hampshire") is None  # ours


@pytest.mark.parametrize(("executors", "who"), [(BOTH, "hampshire"), (("dorset",), "dorset"),
                                               ((), "an executing instance")])
def test_a_witness_never_takes_the_lock(executors: tuple[str, ...], who: str) -> None:
    witness = preference("witness", Clock(), executor=False)
    wait = witness.wait("payroll", TO_HAMPSHIRE, executors, None)
    assert wait is not None and (wait.who, wait.until) == (who, None)
    assert "this instance, witness, runs no runbook: cluster.executor is false" in wait.why


def test_a_witness_refuses_what_needs_the_lock_and_names_the_executors() -> None:
    refusal = preference("witness", Clock(), executor=False).refusal("runs no runbook", BOTH)
    assert refusal is not None and refusal.guard is Guard.NO_EXECUTOR
    assert refusal.reason == ("this instance (witness) runs no runbook (cluster.executor: false): ask an executing "
                              "instance (dorset, hampshire)")
    assert preference("dorset", Clock()).refusal("runs no runbook", BOTH) is None
