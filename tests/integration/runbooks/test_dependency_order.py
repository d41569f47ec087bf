"""Automatic failovers that happen at once follow `depends_on`: `bcd run` as a subprocess, both services probing
the same real HTTP sites, their runbooks calling a real recording server. The dependent waits
(`waiting_for_dependency`) and moves once its dependency is up on the new site; a dependency whose run failed
blocks it (`dependency_failed`) instead of leaving it waiting."""

from __future__ import annotations

from typing import Any

from tests.integration.runbooks.daemon_kit import Bcd, Estate


def services(estate: Estate) -> dict[str, Any]:
    """`directory` falls after one failed probe and moves with a slow runbook (a step, then 2 s); `payroll`
    needs it and falls after four: when dorset goes dark, payroll is down while directory is still moving."""
    directory = estate.service(dorset={"fall": 1}, hampshire={"fall": 1})
    directory["failover"]["runbook"] = "move_directory"
    payroll = estate.service(dorset={"fall": 4})
    payroll["depends_on"] = ["directory"]
    return {"directory": directory, "payroll": payroll}


async def start(estate: Estate) -> Bcd:
    runbooks = {"move_directory": {"steps": [estate.step("switch", "/directory"),
                                             {"name": "settle", "sleep": {"duration": "2s"}}]}}
    config = estate.config(steps=[estate.step("switch", "/payroll")], services=services(estate), runbooks=runbooks)
    return await estate.start(config, ok=("directory", "payroll"))


async def test_a_dependent_waits_for_its_dependency_then_moves(estate: Estate) -> None:
    daemon = await start(estate)
    estate.dorset.status = 503
    waiting = await daemon.wait_log(lambda e: e.get("event") == "service_status" and e.get("service") == "payroll"
                                    and e.get("guard") == "waiting_for_dependency", timeout=30)
    assert waiting["to_status"] == "failover_pending"
    assert "payroll: failover to hampshire waits for directory (failing_over, run_in_progress)" in waiting["reason"]

    directory_run = await daemon.wait_first_run("directory")
    payroll_run = await daemon.wait_first_run("payroll")
    assert (directory_run["result"], payroll_run["result"]) == ("succeeded", "succeeded")
    assert estate.steps.paths() == ["/directory", "/payroll"]  # the order the recorder saw the steps in
    assert payroll_run["steps"][0]["started"] >= directory_run["ended"]
    assert payroll_run["reason"].startswith("payroll: starting failover to hampshire")
    for name in ("directory", "payroll"):
        service = await daemon.wait_service(lambda s: s["status"] == "ok", name)
        assert service["active"] == "hampshire"


async def test_a_failed_dependency_blocks_its_dependent_with_the_chain(estate: Estate) -> None:
    daemon = await start(estate)
    estate.steps.set_statuses([500])  # directory's runbook fails at its first step
    estate.dorset.status = 503
    directory_run = await daemon.wait_first_run("directory")
    assert directory_run["result"] != "succeeded"
    payroll = await daemon.wait_service(lambda s: s["guard"] == "dependency_failed")
    assert payroll["status"] == "blocked"
    assert (f"payroll: failover to hampshire blocked: payroll → directory: directory is blocked (run_failed): "
            f"directory: run {directory_run['id']} failed") in payroll["reason"]
    assert await daemon.runs("payroll") == []
    assert estate.steps.paths() == ["/directory"]
