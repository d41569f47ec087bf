"""Exactly one executor, and runs that survive it only as records: the lock holder killed with SIGKILL in the
middle of a run leaves an `interrupted` run that blocks the service on the other instance, which re-runs no
step; and without an etcd quorum nobody acts on their own until etcd is back."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from bcd.coordination import Keys
from tests.helpers.etcd import wait_deleted
from tests.integration.cluster.kit import WAIT, ClusterEstate, Member, gauge


async def running_member(members: list[Member]) -> tuple[Member, dict[str, Any]]:
    """The member whose own run is in its first step (a sleep), and that run."""
    async with asyncio.timeout(WAIT):
        while True:
            for member in members:
                for run in await member.runs():
                    if run["result"] == "running" and not run["evidence"].get("remote_run"):
                        detail = await member.run(run["id"])
                        if detail["steps"] and detail["steps"][0]["outcome"] == "running":
                            return member, detail
            await asyncio.sleep(0.05)


async def test_the_holder_killed_mid_run_leaves_an_interrupted_run_that_nobody_reruns(estate: ClusterEstate) -> None:
    steps = [{"name": "drain", "sleep": {"duration": "30s"}}, estate.step()]
    members = await estate.start(estate.config(steps=steps), "dorset", "hampshire")
    estate.dorset.status = 503
    holder, run = await running_member(members)
    survivor = next(member for member in members if member is not holder)
    shown = await survivor.wait_service(lambda s: s["status"] == "failing_over" and s["lock"] is not None)
    assert shown["lock"] == {"holder": holder.vantage, "held_here": False}
    assert f"run {holder.vantage}:{run['id']} (failover to hampshire) in progress" in shown["reason"]

    holder.kill9()
    assert holder.proc is not None
    assert await holder.proc.wait() == -signal.SIGKILL

    blocked = await survivor.wait_service(lambda s: s["status"] == "blocked")  # after the holder's lease TTL
    assert blocked["guard"] == "run_interrupted"
    (interrupted,) = await survivor.runs()
    assert interrupted["result"] == "interrupted"
    assert interrupted["detail"].startswith(f"lost_lock: {holder.vantage} lost the lock of payroll")
    assert interrupted["evidence"]["remote_run"] == f"{holder.vantage}:{run['id']}"
    assert blocked["reason"] == f"payroll: run {interrupted['id']} was interrupted; acknowledge to re-arm"
    warning = await survivor.wait_log(lambda e: e.get("event") == "run_interrupted")
    assert warning["remote_run"] == f"{holder.vantage}:{run['id']}"

    await estate.dorset_probed([survivor], 8)  # dorset stays down and the survivor alone is a quorum now
    assert estate.steps.requests == []  # the step after the sleep never ran, here or there
    assert survivor.logged("step_started") == []
    assert [r["id"] for r in await survivor.runs()] == [interrupted["id"]]
    assert (await survivor.service())["guard"] == "run_interrupted"


async def test_without_an_etcd_quorum_nobody_acts_until_it_is_back(estate: ClusterEstate) -> None:
    members = await estate.start(estate.config(), "dorset", "hampshire")
    estate.etcd.kill(1)
    estate.etcd.kill(2)

    for member in members:
        async def down(member: Member = member) -> bool:
            return gauge(await member.metrics(), "bcd_cluster_coordination_up") == 0

        await member.wait_until(down, WAIT)
    estate.dorset.status = 503
    for member in members:
        blocked = await member.wait_service(lambda s: s["status"] == "blocked")
        assert blocked["guard"] == "coordination_unavailable"
        assert "failover blocked (coordination unavailable: no automatic action)" in blocked["reason"]
        assert blocked["coordination"] == "down"
    refused = await members[0].transfer("failover")
    assert refused.status == 409
    assert refused.body["guard"] == "coordination_unavailable"
    await estate.dorset_probed(members, 6)
    assert estate.steps.requests == []
    for member in members:
        assert await member.runs() == []
        assert (await member.service())["guard"] == "coordination_unavailable"

    await estate.etcd.restart(1)
    await estate.etcd.restart(2)
    for member in members:
        await member.wait_service(lambda s: s["active"] == "hampshire" and s["status"] == "ok")
    assert estate.steps.paths() == ["/switch"]
    for member in members:
        assert gauge(await member.metrics(), "bcd_cluster_coordination_up") == 1


async def test_a_frozen_holder_loses_its_lock_after_the_ttl_and_resumed_runs_no_further_step(
    estate: ClusterEstate,
) -> None:
    steps = [{"name": "drain", "sleep": {"duration": "2s"}}, estate.step()]
    members = await estate.start(estate.config(steps=steps), "dorset", "hampshire")
    estate.dorset.status = 503
    holder, run = await running_member(members)
    survivor = next(member for member in members if member is not holder)
    await survivor.wait_service(lambda s: s["status"] == "failing_over" and s["lock"] is not None)
    frozen_at = asyncio.get_running_loop().time()
    holder.send(signal.SIGSTOP)
    try:
        blocked = await survivor.wait_service(lambda s: s["status"] == "blocked")
        # the holder's lease was kept alive until it froze: nobody could take its lock before the TTL ran out
        assert asyncio.get_running_loop().time() - frozen_at >= 1.9
        assert blocked["guard"] == "run_interrupted"
        (mirrored,) = await survivor.runs()
        stale_token = mirrored["evidence"]["token"]
        # etcd deleted the holder's lock as its lease ran out: renewed at most a keepalive (TTL/3) before the
        # freeze, the lease ended 2 s or more after it, so the 2 s sleep step, begun before the freeze, is over
        await wait_deleted(estate.etcd.endpoints, Keys(estate.name).lock("payroll"), since=stale_token, timeout=WAIT)
    finally:
        holder.send(signal.SIGCONT)

    resumed = await holder.wait_run(run["id"])
    assert resumed["result"] == "interrupted"
    assert resumed["detail"].startswith("lost_lock: ")
    assert [step["name"] for step in resumed["steps"]] == ["drain"]  # the switch step never started
    assert estate.steps.requests == []
    assert (await holder.wait_service(lambda s: s["status"] == "blocked"))["guard"] == "run_interrupted"

    acked = await survivor.call("POST", "/api/v1/services/payroll/ack", json_body={"reason": "fenced by hand"})
    assert acked.status == 200
    for member in members:  # the acknowledgement travels through etcd; a new run (a new token) goes ahead
        await member.wait_service(lambda s: s["active"] == "hampshire" and s["status"] == "ok")
    (switch,) = estate.steps.requests
    assert int(switch.json()["fence"]) > stale_token  # a downstream system remembering tokens refuses the old one
