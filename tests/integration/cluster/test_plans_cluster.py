"""A recovery plan in a cluster: the same plan started on two instances at once makes one plan run (the plan's
etcd lock); the other instance is refused, naming the holder, and no service moves twice. Every instance shows
the plan's runs (shared through etcd). A holder frozen with SIGSTOP keeps the lock until its lease runs out; then
the run is `interrupted` on the others, and one of them resumes the same run: the move that was cut short is
acknowledged, never re-run, the services not yet started move, and the holder, awake, starts nothing more."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from tests.helpers import estates
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

    async def shown() -> dict[str, Any] | None:  # the other instance shows the same run, under the same id
        reply = await other.call("GET", "/api/v1/plan-runs")
        return reply.body if [r["state"] for r in reply.body["plan_runs"]] == ["succeeded"] else None

    listed = await other.wait_until(shown, WAIT, 0.2)
    assert [(r["id"], r["holder"]) for r in listed["plan_runs"]] == [(run_id, won.vantage)]


def takeover_config(estate: ClusterEstate) -> dict[str, Any]:
    """directory (group 1), then payroll (slow: 3 s before its switch step) and web, one move at a time."""
    config = estate.config(steps=[estate.step(path="/switch/{service}")], mode="manual")
    config["runbooks"]["slow"] = {"steps": [{"name": "drain", "sleep": {"duration": "3s"}},
                                            estate.step(path="/switch/{service}")]}
    failover = {"runbook": "move", "mode": "manual", "cooldown": "1h"}
    for name in ("directory", "web"):
        config["services"][name] = estates.payroll_service(estate.dorset.url, estate.hampshire.url,
                                                           failover=failover)
    config["services"]["web"]["depends_on"] = ["directory"]
    config["services"]["payroll"]["depends_on"] = ["directory"]
    config["services"]["payroll"]["failover"]["runbook"] = "slow"
    config["plans"] = {"evacuate": {"from": "dorset", "to": "hampshire", "parallel": 1}}
    return config


def states(run: dict[str, Any]) -> dict[str, str]:
    return {move["service"]: move["state"] for move in run["services"]}


async def test_a_frozen_plan_holder_is_taken_over_only_after_its_lease_and_resume_runs_nothing_twice(
    estate: ClusterEstate,
) -> None:
    holder, survivor = await estate.start(takeover_config(estate), "dorset", "hampshire")
    started = await holder.call("POST", "/api/v1/plans/evacuate/run", json_body={"reason": "drill"})
    assert started.status == 202, started
    run_id = started.body["plan_run"]["id"]
    await survivor.wait_service(lambda s: s["status"] == "failing_over" and s["lock"] is not None)
    holder.send(signal.SIGSTOP)
    try:
        # the survivor shows the holder's run, under the same id, as it was shared before payroll's move began
        async def shown() -> dict[str, Any] | None:
            reply = await survivor.call("GET", f"/api/v1/plan-runs/{run_id}")
            return reply.body if reply.status == 200 and states(reply.body)["payroll"] == "moving" else None

        seen = await survivor.wait_until(shown, WAIT, 0.2)
        assert seen["holder"] == "dorset", seen
        assert states(seen) == {"directory": "moved", "payroll": "moving", "web": "pending"}, seen
        # while the frozen holder's lease lives, its plan lock holds
        refused = await survivor.call("POST", f"/api/v1/plan-runs/{run_id}/resume")
        assert refused.status == 409, refused
        assert refused.body["detail"] == f"plan run {run_id} is running, not interrupted", refused.body
        refused = await survivor.call("POST", f"/api/v1/plan-runs/{run_id}/abort", json_body={})
        assert (refused.status, refused.body["detail"]) == (409, f"plan run {run_id} is running: nothing to abort "
                                                                 "here: it is running on the instance at vantage "
                                                                 "dorset, ask that one"), refused.body
        blocked = await survivor.wait_service(lambda s: s["status"] == "blocked")
        assert blocked["guard"] == "run_interrupted"  # the lease ran out: the holder's move is cut short

        async def interrupted() -> dict[str, Any] | None:
            reply = await survivor.call("GET", f"/api/v1/plan-runs/{run_id}")
            return reply.body if reply.body["state"] == "interrupted" else None  # type: ignore[no-any-return]

        run = await survivor.wait_until(interrupted, WAIT, 0.2)
        assert run["detail"].startswith("the instance at vantage dorset lost the plan's lock during this run"), run
        again = await survivor.call("POST", "/api/v1/plans/evacuate/run", json_body={"reason": "take over"})
        assert again.status == 409 and f"plan run {run_id} of evacuate is interrupted" in again.body["detail"], again
        refused = await survivor.call("POST", f"/api/v1/plan-runs/{run_id}/resume")
        assert refused.status == 409 and "payroll (run " in refused.body["detail"], refused.body  # acknowledge it
        acked = await survivor.call("POST", "/api/v1/services/payroll/ack", json_body={"reason": "seen"})
        assert acked.status == 200, acked
        resumed = await survivor.call("POST", f"/api/v1/plan-runs/{run_id}/resume")
        assert resumed.status == 202, resumed
        assert resumed.body["plan_run"]["id"] == run_id and resumed.body["plan_run"]["holder"] == "hampshire"
        run = await survivor.wait_until(lambda: ended(survivor, run_id), WAIT, 0.2)
        assert states(run) == {"directory": "moved", "payroll": "failed", "web": "moved"}, run
        assert run["state"] == "failed", run
        payroll = next(move for move in run["services"] if move["service"] == "payroll")
        assert "acknowledged by olive" in payroll["reason"], payroll
    finally:
        holder.send(signal.SIGCONT)
    # directory moved once (by the holder), web once (by the survivor), payroll's switch never ran
    assert sorted(request.path for request in estate.steps.requests) == ["/switch/directory", "/switch/web"]

    async def agreed() -> dict[str, Any] | None:
        run = await ended(holder, run_id)
        return run if run is not None and run["holder"] == "hampshire" else None

    run = await holder.wait_until(agreed, WAIT, 0.2)  # the holder, awake, keeps the survivor's version
    assert (run["state"], states(run)) == ("failed", {"directory": "moved", "payroll": "failed", "web": "moved"})
    assert holder.logged("plan_lock_lost"), "the holder noticed it lost the plan's lock"
    assert sorted(request.path for request in estate.steps.requests) == ["/switch/directory", "/switch/web"]
