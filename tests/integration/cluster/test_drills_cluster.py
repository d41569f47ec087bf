"""A round-trip drill on one member of a real cluster (etcd, two bcd subprocesses): the other member mirrors
both legs as the drill's (their evidence carries `drill`), so the drill starts no cooldown there either."""

from __future__ import annotations

from typing import Any

from tests.integration.cluster.kit import WAIT, ClusterEstate


async def test_a_drill_on_one_member_starts_no_cooldown_on_the_other(estate: ClusterEstate) -> None:
    config = estate.config(mode="manual")  # failover cooldown 1h
    config["services"]["payroll"]["failback"] = {"runbook": "move", "mode": "manual"}
    driller, other = await estate.start(config, "dorset", "hampshire")
    reply = await driller.call("POST", "/api/v1/services/payroll/drill", json_body={"reason": "cluster drill"})
    assert reply.status == 202, reply
    end = await driller.wait_log(lambda line: line.get("event") == "drill_finished", WAIT)
    assert end["result"] == "succeeded", end

    def both_mirrored(runs: list[dict[str, Any]]) -> bool:
        return len(runs) == 2 and all(run["result"] == "succeeded" for run in runs)

    legs = await other.poll(other.runs, both_mirrored, "the drill's legs mirrored")
    assert [(leg["evidence"]["remote_run"].split(":")[0], leg["evidence"].get("drill")) for leg in legs] == [
        ("dorset", reply.body["id"])] * 2
    # the driller lets go of the service's lock after the drill's end is journaled: until the other member sees
    # that, a run would be refused as the lock holder's (run_in_progress), which is right and not what is tested
    await other.wait_service(lambda service: service["lock"] is None)
    real = await other.transfer("failover")
    assert real.status == 202, real  # no cooldown from the drill's legs here either
