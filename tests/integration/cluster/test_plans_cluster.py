"""A recovery plan in a cluster: the same plan started on two instances at once makes one plan run (the plan's
etcd lock); the other instance is refused, naming the holder, and no service moves twice. A holder frozen with
SIGSTOP keeps the lock until its lease runs out; only then may another instance start the plan."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from tests.integration.cluster.kit import WAIT, ClusterEstate, Member


async def ended(member: Member, run_id: int) -> dict[str, Any] | None:
    """The plan run once it has ended, else None."""
    reply = await member.call("GET", f"/api/v1/plan-runs/{run_id}")
    return reply.body if reply.body["ended"] is not None else None  # type: ignore[no-any-return]


async def test_the_same_plan_started_on_two_instances_at_once_runs_once(estate: ClusterEstate) -> None:
    config = estate.config(steps=[{"name": "drain", "sleep": {"duration": "1s"}}, estate.step()], mode="manual")
    config["plans"] = {"evacuate": {"from": "dorset", "to": "hampshire"}}
    dorset, hampshire = await estate.start(config, "dorset", "hampshire")
    answers = await asyncio.gather(*(member.call("POST", "/api/v1/plans/evacuate/run", json_body={
        "reason": "both at once"}) for member in (dorset, hampshire)))
    assert sorted(answer.status for answer in answers) == [202, 409], answers
    (won,) = [member for member, answer in zip((dorset, hampshire), answers, strict=True) if answer.status == 202]
    (lost,) = [answer for answer in answers if answer.status == 409]
    assert lost.body["detail"] == (f"plan evacuate is running elsewhere: its lock is held by the instance at "
                                   f"vantage {won.vantage}"), lost.body
    run_id = next(answer.body["plan_run"]["id"] for answer in answers if answer.status == 202)
    run = await won.wait_until(lambda: ended(won, run_id), WAIT, 0.2)
    assert run["state"] == "succeeded", run
    assert any("under plan lock token" in line for line in run["events"])  # type: ignore[union-attr]
    assert len(estate.steps.to("/switch")) == 1  # payroll moved once
    other = hampshire if won is dorset else dorset
    reply = await other.call("GET", "/api/v1/plan-runs")
    assert reply.body == {"plan_runs": []}


async def test_a_frozen_plan_holder_is_taken_over_only_after_its_lease_and_nothing_runs_twice(
    estate: ClusterEstate,
) -> None:
    steps = [{"name": "drain", "sleep": {"duration": "2s"}}, estate.step()]
    config = estate.config(steps=steps, mode="manual")
    config["plans"] = {"evacuate": {"from": "dorset", "to": "hampshire"}}
    holder, survivor = await estate.start(config, "dorset", "hampshire")
    started = await holder.call("POST", "/api/v1/plans/evacuate/run", json_body={"reason": "drill"})
    assert started.status == 202, started
    first = started.body["plan_run"]["id"]
    await survivor.wait_service(lambda s: s["status"] == "failing_over" and s["lock"] is not None)
    holder.send(signal.SIGSTOP)
    try:
        # while the frozen holder's lease lives, its plan lock holds
        refused = await survivor.call("POST", "/api/v1/plans/evacuate/run", json_body={"reason": "take over"})
        assert refused.status == 409, refused
        assert refused.body["detail"].endswith("its lock is held by the instance at vantage dorset")
        blocked = await survivor.wait_service(lambda s: s["status"] == "blocked")
        assert blocked["guard"] == "run_interrupted"  # the lease ran out: the holder's move is cut short
        taken = await survivor.call("POST", "/api/v1/plans/evacuate/run", json_body={"reason": "take over"})
        assert taken.status == 202, taken  # the plan lock went with the lease

        second = taken.body["plan_run"]["id"]
        run = await survivor.wait_until(lambda: ended(survivor, second), WAIT, 0.2)
        (move,) = run["services"]
        assert (run["state"], move["state"]) == ("failed", "failed"), run
        assert move["reason"].startswith("not started: run ") and "needs acknowledging first" in move["reason"]
    finally:
        holder.send(signal.SIGCONT)
    run = await holder.wait_until(lambda: ended(holder, first), WAIT, 0.2)
    (move,) = run["services"]
    assert (run["state"], move["state"]) == ("failed", "failed"), run
    assert "lost_lock" in move["reason"], move
    assert estate.steps.requests == []  # the switch step never ran, on either instance
