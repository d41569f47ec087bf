"""Site lost in a cluster: three `bcd run` processes (dorset, hampshire, and a witness) over a real etcd. Every
service of dorset seen down by every vantage → each instance declares dorset lost once (one `site_lost`), every
instance's `BcdSiteLost` page carries the same labels (Alertmanager makes one page of them), and the plan with
`trigger: auto` runs once across the cluster: one plan run, each service moved once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from tests.helpers import estates
from tests.helpers.recorder import Recorder
from tests.integration.cluster.kit import WAIT, ClusterEstate, Member

WITNESS = {"witness": {"executor": False}}


def config(estate: ClusterEstate, pager: Recorder) -> dict[str, Any]:
    step = estate.step(path="/switch/{service}")
    settings = estate.config(steps=[{"name": "drain", "sleep": {"duration": "500ms"}}, step], mode="manual")
    failover = {"runbook": "move", "mode": "manual", "cooldown": "1h"}
    settings["services"]["directory"] = estates.payroll_service(estate.dorset.url, estate.hampshire.url,
                                                                failover=failover)
    settings["services"]["payroll"]["depends_on"] = ["directory"]
    settings["plans"] = {"evacuate": {"from": "dorset", "to": "hampshire", "trigger": "auto"}}
    settings["alerts"] = {"alertmanager": {"urls": [pager.url()], "resend": "500ms"}}
    settings["cluster"]["target_site_grace"] = "5s"  # how long the others leave the plan to hampshire's instance
    return settings


def pages(pager: Recorder, name: str) -> list[dict[str, Any]]:
    return [alert for request in pager.to("/api/v2/alerts") for alert in request.json()
            if alert["labels"]["alertname"] == name]


async def decided(member: Member) -> list[str]:
    """The member's answers to the lost site: its plan_deferred (if any), then plan_started or plan_not_started
    (with why)."""
    said = await member.wait_log(lambda line: line.get("event") in {"plan_started", "plan_not_started"},
                                 timeout=WAIT)
    deferred = [f"deferred to {line['to']}" for line in member.logged("plan_deferred")]
    return [*deferred, said["event"] + (f": {said['why']}" if "why" in said else "")]


async def test_a_site_lost_in_a_cluster_is_declared_once_and_its_auto_plan_runs_once(estate: ClusterEstate) -> None:
    async with Recorder() as pager:
        members = await estate.start(config(estate, pager), "dorset", "hampshire", "witness", cluster=WITNESS)
        estate.dorset.status = 503  # the whole of dorset goes dark, for every vantage
        lost = await asyncio.gather(*(member.wait_log(lambda line: line.get("event") == "site_lost", timeout=WAIT)
                                      for member in members))
        assert {(line["site"], tuple(line["services"])) for line in lost} == {("dorset", ("directory", "payroll"))}
        runner, witness = members[1], members[2]  # the plan's `to` site's instance starts it
        line = await runner.wait_log(lambda line: line.get("event") == "plan_started", timeout=WAIT)
        assert line["by"] == "auto" and line["reason"].startswith("site dorset lost: every service probed"), line
        answers = await asyncio.gather(*(decided(member) for member in members))
        assert answers[1:] == [["plan_started"], ["plan_not_started: this instance (witness) runs no runbook "
                                                  "(cluster.executor: false): an executing instance starts it"]]
        assert answers[0][0] == "deferred to hampshire" and answers[0][1] in {  # after the grace, no second run
            "plan_not_started: nothing to move: no service of plan evacuate is active on dorset (moved already?)",
            "plan_not_started: plan evacuate is running elsewhere: its lock is held by the instance at vantage "
            "hampshire"}, answers[0]
        assert witness.logged("plan_deferred") == []

        async def ended() -> dict[str, Any] | None:
            reply = await runner.call("GET", f"/api/v1/plan-runs/{line['plan_run']}")
            return reply.body if reply.body["ended"] is not None else None  # type: ignore[no-any-return]

        run = await runner.wait_until(ended, WAIT, 0.2)
        assert run["state"] == "succeeded", run
        assert [m["service"] for m in run["services"]] == ["directory", "payroll"]
        assert sorted(request.path for request in estate.steps.requests) == ["/switch/directory", "/switch/payroll"]
        for member in members:
            await member.wait_service(lambda s: s["active"] == "hampshire")
            events = (await member.call("GET", "/api/v1/events?limit=1000")).body["events"]
            assert [event["site"] for event in events if event["kind"] == "site_lost"] == ["dorset"], member.vantage
            if member is not runner:
                assert all(line["event"] != "plan_started" for line in member.log_lines), member.vantage
        posts = len(pager.to("/api/v2/alerts"))
        await pager.wait_for(posts + 3, "/api/v2/alerts")  # resent by every member: still one alert
        assert {json.dumps(alert["labels"], sort_keys=True) for alert in pages(pager, "BcdSiteLost")} == {json.dumps(
            {"alertname": "BcdSiteLost", "instance": "bcd", "severity": "critical", "site": "dorset"},
            sort_keys=True)}
