"""Two bcd instances (dorset, hampshire) over one config and a real three-member etcd: a site every vantage sees
down fails over exactly once across the cluster; a site one vantage sees down does not fail over at all."""

from __future__ import annotations

from typing import Any

from tests.integration.cluster.kit import ClusterEstate, Member, gauge
from tests.integration.runbooks.daemon_kit import sample


def moved(service: dict[str, Any]) -> bool:
    return bool(service["active"] == "hampshire" and service["status"] == "ok")


async def holder_and_other(members: list[Member]) -> tuple[Member, Member]:
    """(the member that ran the failover, the other one)."""
    for member in members:
        runs = await member.runs()
        if any(not run["evidence"].get("remote_run") for run in runs):
            other = next(m for m in members if m is not member)
            return member, other
    raise AssertionError("no member ran the failover")


async def test_a_site_down_for_every_vantage_fails_over_exactly_once(estate: ClusterEstate) -> None:
    members = await estate.start(estate.config(), "dorset", "hampshire")
    estate.dorset.status = 503  # down, whoever looks
    for member in members:
        await member.wait_service(moved)
    await estate.dorset_probed(members, 6)  # both keep seeing dorset down: nobody runs it again

    assert estate.steps.paths() == ["/switch"]
    holder, other = await holder_and_other(members)
    (run,) = await holder.runs()
    assert (run["result"], run["trigger"], run["to"]) == ("succeeded", "auto", "hampshire")
    quorum = run["evidence"]["quorum"]
    assert quorum["needed"] == 2
    assert sorted(quorum["down"]) == ["dorset", "hampshire"]
    assert quorum["dissenting"] == []
    assert "quorum: 2 of 2 live vantages see dorset down, 2 needed" in run["reason"]
    sent = estate.steps.requests[0].json()
    assert sent["to"] == "hampshire" and sent["run"] == str(run["id"])
    assert int(sent["fence"]) > 0  # the lock's token, an etcd revision

    (mirrored,) = await other.runs()  # the other instance shows the run too, as a record of the cluster's
    assert mirrored["result"] == "succeeded"
    assert mirrored["evidence"]["remote_run"] == f"{holder.vantage}:{run['id']}"
    assert mirrored["evidence"]["token"] == int(sent["fence"])
    for member in members:
        service = await member.service()
        assert service["active"] == "hampshire"
        assert service["lock"] is None
        assert set(service["views"]) == {"dorset", "hampshire"}
        assert service["views"][other.vantage]["sites"]["dorset"]["state"] == "down"
        metrics = await member.metrics()
        assert gauge(metrics, "bcd_cluster_coordination_up") == 1
        assert sample(metrics, "bcd_cluster_members", vantage="dorset") == 1
        assert sample(metrics, "bcd_cluster_members", vantage="hampshire") == 1
        assert sample(metrics, "bcd_site_votes", service="payroll", site="dorset", state="down") == 2
        assert sample(metrics, "bcd_site_votes", service="payroll", site="hampshire", state="up") == 2  # every site
        assert service["views"][other.vantage]["sites"]["hampshire"]["state"] == "up"
        assert sample(metrics, "bcd_lock_held", service="payroll") == 0
        assert sample(metrics, "bcd_vantage_view_age_seconds", vantage=other.vantage) is not None


async def test_a_site_down_for_one_vantage_only_is_blocked_without_quorum(estate: ClusterEstate) -> None:
    dorset_bcd, hampshire_bcd = await estate.start(estate.config(), "dorset", "hampshire")
    estate.dorset.down_for = {"hampshire"}  # the link from hampshire to dorset is down, not dorset

    blocked = await hampshire_bcd.wait_service(lambda s: s["status"] == "blocked")
    assert blocked["guard"] == "no_quorum"
    assert blocked["reason"].startswith(
        "payroll: failover blocked (no quorum: 1 of 2 live vantages see dorset down, 2 needed; down: hampshire; "
        "dissenting: dorset up (")
    assert blocked["views"]["hampshire"]["sites"]["dorset"]["state"] == "down"
    assert blocked["views"]["dorset"]["sites"]["dorset"]["state"] == "up"
    await estate.dorset_probed([dorset_bcd, hampshire_bcd], 6)

    assert (await dorset_bcd.service())["status"] == "ok"
    assert (await hampshire_bcd.service())["guard"] == "no_quorum"
    assert estate.steps.requests == []
    assert await dorset_bcd.runs() == [] and await hampshire_bcd.runs() == []
    metrics = await hampshire_bcd.metrics()
    assert sample(metrics, "bcd_site_votes", service="payroll", site="dorset", state="down") == 1
    assert sample(metrics, "bcd_site_votes", service="payroll", site="dorset", state="up") == 1
    assert sample(metrics, "bcd_site_votes", service="payroll", site="hampshire", state="up") == 2
    assert sample(metrics, "bcd_site_votes", service="payroll", site="hampshire", state="down") == 0
    assert sample(metrics, "bcd_service_blocked", service="payroll", reason="no_quorum") == 1

    estate.dorset.down_for = set()  # the link is back
    await hampshire_bcd.wait_service(lambda s: s["status"] == "ok")
    await estate.dorset_probed([dorset_bcd, hampshire_bcd], 4)  # both had the time to act, and did not
    assert estate.steps.requests == []
    assert await dorset_bcd.runs() == [] and await hampshire_bcd.runs() == []
