"""A recovery plan in a cluster: the same plan started on two instances at once makes one plan run (the plan's
etcd lock); the other instance is refused, naming the holder, and no service moves twice."""

from __future__ import annotations

import asyncio

from tests.integration.cluster.kit import WAIT, ClusterEstate


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

    async def ended() -> dict[str, object] | None:
        reply = await won.call("GET", f"/api/v1/plan-runs/{run_id}")
        return reply.body if reply.body["ended"] is not None else None  # type: ignore[no-any-return]

    run = await won.wait_until(ended, WAIT, 0.2)
    assert run["state"] == "succeeded", run
    assert any("under plan lock token" in line for line in run["events"])  # type: ignore[union-attr]
    assert len(estate.steps.to("/switch")) == 1  # payroll moved once
    other = hampshire if won is dorset else dorset
    reply = await other.call("GET", "/api/v1/plan-runs")
    assert reply.body == {"plan_runs": []}
