"""A witness votes and never executes; the executing instance in the target site runs the failover; the others say
whom they wait for. Three `bcd run` processes (dorset, hampshire, and a witness with `cluster.executor: false`)
over a real three-member etcd:

- the executors killed one after another: the one left runs the failover while the witness waits for it, then
  with none left the witness shows `blocked` (`no_executor`); the witness never takes a lock, and refuses an
  operator's failover or acknowledgement (it cannot share them without one);
- ten services fail over to hampshire at once, ten independent lock races: hampshire's instance runs all ten,
  and the other two log "waiting for hampshire", never "starting failover";
- hampshire's instance live but not acting (it does not see dorset down): dorset's waits the grace, then runs it.
"""

from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

from tests.integration.cluster.kit import ClusterEstate, Member
from tests.integration.runbooks.daemon_kit import sample

WITNESS = {"witness": {"executor": False}}
SERVICES = ["payroll", *(f"payroll{number}" for number in range(2, 11))]


def moved(service: dict[str, Any]) -> bool:
    return bool(service["active"] == "hampshire" and service["status"] == "ok")


def statuses(member: Member, service: str = "payroll") -> list[dict[str, Any]]:
    """The service_status lines `member` logged for `service`."""
    return [line for line in member.logged("service_status") if line.get("service") == service]


async def killed(member: Member, survivors: list[Member]) -> None:
    """SIGKILL `member`; return once its view is gone (its lease expired) for every survivor."""
    member.kill9()
    assert member.proc is not None
    assert await member.proc.wait() == -signal.SIGKILL
    left = {survivor.vantage for survivor in survivors}
    for survivor in survivors:
        await survivor.wait_service(lambda s: set(s["views"]) == left)


async def test_a_witness_never_takes_a_lock_and_without_executors_the_service_is_blocked(
    estate: ClusterEstate,
) -> None:
    config = estate.config(steps=[{"name": "drain", "sleep": {"duration": "500ms"}}, estate.step()])
    config["services"]["payroll"]["failover"]["cooldown"] = "0s"  # the second failover is not held by a cooldown
    dorset, hampshire, witness = await estate.start(config, "dorset", "hampshire", "witness", cluster=WITNESS)
    views = (await witness.service())["views"]
    assert {vantage: view["executor"] for vantage, view in views.items()} == {
        "dorset": True, "hampshire": True, "witness": False}  # every instance knows who executes

    await killed(hampshire, [dorset, witness])  # dorset's instance is the only executor left
    estate.dorset.status = 503
    for member in (dorset, witness):
        await member.wait_service(moved)
    (run,) = await dorset.runs()
    assert (run["result"], run["to"], run["evidence"].get("remote_run")) == ("succeeded", "hampshire", None)
    (mirrored,) = await witness.runs()
    assert mirrored["evidence"]["remote_run"] == f"dorset:{run['id']}"
    assert estate.steps.paths() == ["/switch"]
    told = [line["reason"] for line in statuses(witness) if line["to_status"] == "failing_over"]
    assert told[0] in {  # whether the witness decided before it read dorset's run record, or after
        "payroll: failover to hampshire: waiting for dorset (this instance, witness, runs no runbook: "
        "cluster.executor is false)",
        "payroll: failover to hampshire: waiting for dorset (it holds the lock of payroll)",
        f"payroll: run dorset:{run['id']} (failover to hampshire) in progress",
        "payroll: run of lock holder dorset (failover to ?) in progress"}, told
    assert not [reason for reason in told if "starting failover" in reason]

    refused = await witness.transfer("failover", force=True)  # force: past the policy (dorset is down)
    assert (refused.status, refused.body["guard"]) == (409, "no_executor")
    assert refused.body["detail"] == ("this instance (witness) runs no runbook (cluster.executor: false): ask an "
                                      "executing instance (dorset)")
    ack = await witness.call("POST", "/api/v1/services/payroll/ack", json_body={"reason": "seen"})
    assert (ack.status, ack.body["detail"]) == (409, "this instance (witness) takes no lock, so it cannot share an "
                                                     "acknowledgement (cluster.executor: false): ask an executing "
                                                     "instance (dorset)")

    await killed(dorset, [witness])  # nobody left to execute
    estate.dorset.status, estate.hampshire.status = 200, 503  # hampshire (active now) down, dorset up
    blocked = await witness.wait_service(lambda s: s["status"] == "blocked")
    assert blocked["guard"] == "no_executor"
    assert blocked["reason"].startswith(
        "payroll: failover blocked (no executor: none of the live instances (witness) runs runbooks "
        "(cluster.executor: false); an executing instance must be live to take the lock): active hampshire down (")
    assert sample(await witness.metrics(), "bcd_service_blocked", service="payroll", reason="no_executor") == 1
    await estate.dorset_probed([witness], 8)  # time to act, had it been able to
    assert (await witness.service())["guard"] == "no_executor"
    assert [r["id"] for r in await witness.runs()] == [mirrored["id"]]
    assert estate.steps.paths() == ["/switch"]
    assert dorset.logged("lock acquired") != []  # what a lock taken looks like in the log ...
    assert witness.logged("lock acquired") == []  # ... and the witness never took one


async def test_a_failover_to_hampshire_is_run_by_hampshires_instance_every_time(estate: ClusterEstate) -> None:
    config = estate.config(steps=[{"name": "drain", "sleep": {"duration": "500ms"}}, estate.step()])
    config["services"] = {name: config["services"]["payroll"] for name in SERVICES}
    members = await estate.start(config, "dorset", "hampshire", "witness", cluster=WITNESS)
    dorset, hampshire, witness = members
    estate.dorset.status = 503  # ten failovers to hampshire at once: ten races for ten locks
    for member in members:
        for name in SERVICES:
            await member.wait_service(moved, name)

    assert len(estate.steps.requests) == len(SERVICES)
    assert {request.json()["to"] for request in estate.steps.requests} == {"hampshire"}
    for name in SERVICES:
        (run,) = await hampshire.runs(name)
        assert (run["result"], run["evidence"].get("remote_run")) == ("succeeded", None)
        for other in (dorset, witness):
            (mirrored,) = await other.runs(name)
            assert mirrored["evidence"]["remote_run"] == f"hampshire:{run['id']}"
        assert any(line["reason"].startswith(f"{name}: starting failover to hampshire: ")
                   for line in statuses(hampshire, name))
    for other in (dorset, witness):  # the non-holders tell the same story: whom they wait for
        told = [line for name in SERVICES for line in statuses(other, name) if line["to_status"] == "failing_over"]
        assert told, f"{other.vantage} logged no failover"
        assert not [line for line in told if "starting failover" in line["reason"]]
        assert [line["reason"] for line in told if not any(
            words in line["reason"] for words in ("waiting for hampshire", "run hampshire:", "lock holder hampshire"))
                ] == []
        assert any("waiting for hampshire" in line["reason"] for line in told)
        assert other.logged("lock acquired") == []


async def test_while_the_target_sites_instance_does_not_act_another_executor_takes_over_after_the_grace(
    estate: ClusterEstate,
) -> None:
    config = estate.config()
    config["cluster"]["target_site_grace"] = "1s"
    dorset, hampshire, witness = await estate.start(config, "dorset", "hampshire", "witness", cluster=WITNESS)
    estate.dorset.down_for = {"dorset", "witness"}  # a quorum sees dorset down; hampshire's instance does not
    for member in (dorset, hampshire, witness):
        await member.wait_service(moved)

    (run,) = await dorset.runs()  # hampshire's instance was live all along, and the grace let dorset's act
    assert (run["result"], run["to"], run["evidence"].get("remote_run")) == ("succeeded", "hampshire", None)
    waited = next(line for line in statuses(dorset) if line["to_status"] == "failing_over")
    assert waited["reason"] == ("payroll: failover to hampshire: waiting for hampshire (the executing instance in the "
                                "target site; dorset takes the lock itself if hampshire has not within 1s)")
    over = await dorset.wait_log(lambda line: line.get("event") == "target_site_grace_over")
    assert (over["service"], over["waited_for"], over["grace"]) == ("payroll", "hampshire", 1.0)
    started = await dorset.wait_log(lambda line: line.get("event") == "run_started")
    waited_for = timestamp(started) - timestamp(waited)
    assert 0.9 <= waited_for < 5.0, waited_for  # the grace (the log's times are those of the group commit)
    assert hampshire.logged("lock acquired") == [] and witness.logged("lock acquired") == []


def timestamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"]).timestamp()
