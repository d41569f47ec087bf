"""Failover end to end: `bcd run` as a subprocess probing two real HTTP sites, its runbook calling a real
recording server. Automatic, manual and dry-run modes; the guards that hold a failover back."""

from __future__ import annotations

import asyncio
import re

from tests.helpers.recorder import Recorder
from tests.integration.runbooks.daemon_kit import Estate, sample


async def test_auto_failover_runs_once_while_the_old_site_stays_down(estate: Estate) -> None:
    daemon = await estate.start(estate.config(steps=[estate.step(json={"to": "{to_site}", "run": "{run_id}"})]))
    estate.dorset.status = 503
    run = await daemon.wait_first_run()
    assert (run["result"], run["kind"], run["trigger"], run["from"], run["to"]) == (
        "succeeded", "failover", "auto", "dorset", "hampshire")
    assert run["steps"][0]["outcome"] == "succeeded"
    await estate.probes_of(estate.dorset, 5)  # the old site stays down for several more probe intervals
    assert [r.json() for r in estate.steps.requests] == [{"to": "hampshire", "run": str(run["id"])}]
    assert len(await daemon.runs()) == 1
    service = await daemon.service()
    assert (service["active"], service["status"], service["home"]) == ("hampshire", "ok", "dorset")
    assert service["sites"]["dorset"]["state"] == "down"
    metrics = await daemon.metrics()
    assert sample(metrics, "bcd_runbook_runs_total", service="payroll", runbook="move", trigger="auto",
                  result="succeeded") == 1
    assert sample(metrics, "bcd_service_active_site", service="payroll", site="hampshire") == 1
    started = await daemon.wait_log(lambda e: e.get("event") == "run_started")
    assert (started["run_id"], started["trigger"], started["to_site"]) == (run["id"], "auto", "hampshire")
    assert [e["run_id"] for e in daemon.log_lines if e.get("event") == "run_started"] == [run["id"]]
    assert run["reason"].startswith("payroll: starting failover to hampshire: active dorset down (2 consecutive")


async def test_manual_mode_waits_for_an_operator(estate: Estate) -> None:
    daemon = await estate.start(estate.config(services={"payroll": estate.service(mode="manual")}))
    estate.dorset.status = 503
    service = await daemon.wait_service(lambda s: s["status"] == "failover_pending")
    assert "failover to hampshire waits for an operator" in service["reason"]
    await estate.probes_of(estate.dorset, 4)
    assert await daemon.runs() == []
    assert estate.steps.requests == []
    reply = await daemon.transfer("failover", reason="dorset is down, moving")
    assert reply.status == 202, reply
    assert (reply.body["trigger"], reply.body["to"], reply.body["reason"]) == (
        "olive", "hampshire", "olive: dorset is down, moving")
    run = await daemon.wait_run(reply.body["id"])
    assert run["result"] == "succeeded"
    assert estate.steps.paths() == ["/switch"]
    service = await daemon.wait_service(lambda s: s["status"] == "ok")
    assert service["active"] == "hampshire"
    metrics = await daemon.metrics()
    assert sample(metrics, "bcd_runbook_runs_total", service="payroll", trigger="operator", result="succeeded") == 1


async def test_dry_run_mode_journals_rendered_steps_and_executes_nothing(estate: Estate) -> None:
    steps = [
        estate.step("switch", "/dns/{service}", json={"from": "{from_site}", "to": "{to_site}", "run": "{run_id}"}),
        {"name": "settle", "sleep": {"duration": "1h"}},
    ]
    daemon = await estate.start(estate.config(steps=steps, services={"payroll": estate.service(mode="dry-run")}))
    estate.dorset.status = 503
    run = await daemon.wait_first_run()
    assert (run["result"], run["dry_run"], run["trigger"]) == ("dry_run", True, "auto")
    assert [(s["name"], s["outcome"], s["attempts"]) for s in run["steps"]] == [
        ("switch", "dry_run", 0), ("settle", "dry_run", 0)]
    assert run["steps"][0]["inputs"]["url"] == estate.steps.url("/dns/payroll")
    assert run["steps"][0]["inputs"]["json"] == {"from": "dorset", "to": "hampshire", "run": str(run["id"])}
    service = await daemon.wait_service(lambda s: s["status"] == "failover_pending")
    await estate.probes_of(estate.dorset, 4)
    assert len(await daemon.runs()) == 1  # one dry run per episode
    assert service["active"] == "dorset"

    reply = await daemon.transfer("failover", dry_run=True)  # an operator's dry run, likewise
    assert reply.status == 202, reply
    operator_run = await daemon.wait_run(reply.body["id"])
    assert (operator_run["result"], operator_run["trigger"]) == ("dry_run", "olive")
    assert [s["outcome"] for s in operator_run["steps"]] == ["dry_run", "dry_run"]
    assert operator_run["steps"][0]["inputs"]["json"]["run"] == str(operator_run["id"])
    assert estate.steps.requests == []
    assert (await daemon.service())["active"] == "dorset"


async def test_standby_not_up_blocks_and_all_sites_down_is_unavailable(estate: Estate) -> None:
    async with Recorder([200]) as kent, Recorder([200]) as wessex:
        library = {
            "active": "kent",
            "failover": {"runbook": "move", "mode": "auto"},
            "sites": {"kent": {"probes": [{"name": "health", "http": {"url": kent.url("/health")}}]},
                      "wessex": {"probes": [{"name": "health", "http": {"url": wessex.url("/health")}}]}},
        }
        # payroll's standby takes 100 failures to fall: one failure leaves it degraded, not down
        services = {"payroll": estate.service(hampshire={"fall": 100}),
                    "library": library}
        config = estate.config(services=services)
        config["sites"].update({"kent": {}, "wessex": {}})
        daemon = await estate.start(config, ok=("payroll", "library"))

        estate.hampshire.status = 503
        await daemon.wait_service(lambda s: s["sites"]["hampshire"]["state"] == "degraded")
        estate.dorset.status = 503
        payroll = await daemon.wait_service(lambda s: s["status"] == "blocked")
        assert payroll["guard"] == "standby_not_up"
        assert "failover blocked: active dorset down" in payroll["reason"]
        assert "no standby up (hampshire degraded)" in payroll["reason"]

        wessex.set_statuses([503])  # the standby first: with wessex up, kent going down would fail over
        await daemon.wait_service(lambda s: s["sites"]["wessex"]["state"] == "down", "library")
        kent.set_statuses([503])
        library_view = await daemon.wait_service(lambda s: s["status"] == "unavailable", "library")
        assert library_view["guard"] is None
        assert library_view["reason"] == "library: no site up: kent down, wessex down"

        await estate.probes_of(estate.dorset, 4)
        assert await daemon.runs("payroll") == [] and await daemon.runs("library") == []
        assert estate.steps.requests == []
        metrics = await daemon.metrics()
        assert sample(metrics, "bcd_service_blocked", service="payroll", reason="standby_not_up") == 1
        assert sample(metrics, "bcd_service_status", service="library", status="unavailable") == 1


async def test_flapping_standby_blocks_the_failover(estate: Estate) -> None:
    async with Recorder([200, 503], cycle=True) as flappy:
        service = estate.service()
        service["sites"]["hampshire"]["probes"][0]["http"]["url"] = flappy.url("/health")
        daemon = await estate.start(estate.config(services={"payroll": service}), ok=())
        await daemon.wait_service(lambda s: s["sites"]["hampshire"]["state"] == "flapping")
        estate.dorset.status = 503
        payroll = await daemon.wait_service(lambda s: s["status"] == "blocked")
        assert payroll["guard"] == "flapping"
        assert "no standby up (hampshire flapping)" in payroll["reason"]
        await estate.probes_of(estate.dorset, 4)
        assert await daemon.runs() == []
        assert estate.steps.requests == []


async def test_cooldown_refuses_a_move_back_unless_forced(estate: Estate) -> None:
    failback = {"runbook": "back", "mode": "manual", "cooldown": "1h"}
    config = estate.config(services={"payroll": estate.service(failback=failback)},
                           runbooks={"back": {"steps": [estate.step("back", "/back")]}})
    daemon = await estate.start(config)
    estate.dorset.status = 503
    first = await daemon.wait_first_run()
    assert first["result"] == "succeeded"
    estate.dorset.status = 200
    await daemon.wait_service(lambda s: s["sites"]["dorset"]["state"] == "up" and s["status"] == "ok")

    for kind, body in (("failback", {}), ("failover", {"to": "dorset"})):
        refused = await daemon.transfer(kind, **body)
        assert refused.status == 409, refused
        assert refused.content_type == "application/problem+json"
        assert refused.body["guard"] == "cooldown"
        assert re.fullmatch(r"cooldown: \d+s left \(use force\)", refused.body["detail"])
    assert len(await daemon.runs()) == 1

    forced = await daemon.transfer("failback", force=True, reason="dorset is fixed")
    assert forced.status == 202, forced
    assert (forced.body["forced"], forced.body["kind"], forced.body["to"]) == (True, "failback", "dorset")
    assert (await daemon.wait_run(forced.body["id"]))["result"] == "succeeded"
    assert estate.steps.paths() == ["/switch", "/back"]
    assert (await daemon.wait_service(lambda s: s["active"] == "dorset"))["status"] == "ok"


async def test_concurrent_requests_start_one_run(estate: Estate) -> None:
    steps = [{"name": "hold", "approval": {"timeout": "1h"}}]
    daemon = await estate.start(estate.config(steps=steps, services={"payroll": estate.service(mode="manual")}))
    replies = await asyncio.gather(daemon.transfer("failover", force=True), daemon.transfer("failover", force=True))
    assert sorted(r.status for r in replies) == [202, 409]
    refused = next(r for r in replies if r.status == 409)
    started = next(r for r in replies if r.status == 202)
    assert refused.body["guard"] == "run_in_progress"
    assert refused.body["detail"] == f"run {started.body['id']} of payroll is in progress"
    assert [r["id"] for r in await daemon.runs()] == [started.body["id"]]
