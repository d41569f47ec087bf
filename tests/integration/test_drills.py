"""DR drills in the real daemon (a subprocess) on loopback HTTP targets: a round trip that ends active on the
site it started on with both legs journaled as a drill, a drill refused while the standby is down, a drill
aborted when its target degrades mid-hold (it fails back), a drill that starts no cooldown for a real failover,
and `bcd drill` on the command line."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.api import CONFIG, VIEWER, Api, api_daemon

# probes patient enough for a loaded machine (a CLI subprocess starting must not make a site look down)
DRILL_CONFIG = CONFIG.replace(
    "defaults: {{interval: 200ms, timeout: 150ms, rise: 1, fall: 2}}",
    "defaults: {{interval: 1s, timeout: 800ms, rise: 1, fall: 2}}",
).replace(
    """  move: {{steps: [{{name: pause, sleep: {{duration: 10ms}}}}]}}""",
    """  move: {{steps: [{{name: pause, sleep: {{duration: 10ms}}}},
                  {{name: verify, wait_healthy: {{site: "{{to_site}}", within: 5s}}}}]}}""",
).replace(
    """    failover: {{runbook: move, mode: manual}}""",
    """    failover: {{runbook: move, mode: manual, cooldown: 1h}}
    failback: {{runbook: move, mode: manual}}""",
)

# a failover allowed at once, a failback held back by the default 30-minute cooldown of a real run
SHORT_FAILOVER_COOLDOWN = DRILL_CONFIG.replace("mode: manual, cooldown: 1h}}", "mode: manual, cooldown: 0s}}")


async def cli(daemon: Api, *args: str) -> subprocess.CompletedProcess[str]:
    """`bcd ARGS` in a thread: the targets, served by this event loop, keep answering the daemon's probes."""
    return await asyncio.to_thread(daemon.cli, *args)


async def service(daemon: Api) -> dict[str, Any]:
    status, _, body = await daemon.call("GET", "/api/v1/services/payroll", token=VIEWER)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def both_up(daemon: Api) -> None:
    async def up() -> bool:
        body = await service(daemon)
        return body["status"] == "ok" and all(site["state"] == "up" for site in body["sites"].values())
    await daemon.wait_until(up, timeout=15)


async def drill(daemon: Api, **fields: Any) -> tuple[int, Any]:
    status, _, body = await daemon.call("POST", "/api/v1/services/payroll/drill",
                                        body={"reason": "quarterly test", **fields})
    return status, body


async def holding(daemon: Api) -> dict[str, Any]:
    """A drill started with both sites up, once it holds payroll on hampshire (for 10 minutes)."""
    await both_up(daemon)
    status, body = await drill(daemon, hold="10m")
    assert status == 202, body
    await daemon.wait_until(lambda: _active(daemon, "hampshire"), timeout=15)
    return body  # type: ignore[no-any-return]


async def finished(daemon: Api, timeout: float = 30.0) -> dict[str, Any]:
    return await daemon.wait_log(lambda line: line.get("event") == "drill_finished", timeout=timeout)


async def recoveries(daemon: Api) -> list[dict[str, Any]]:
    status, _, body = await daemon.call("GET", "/api/v1/services/payroll/recoveries", token=VIEWER)
    assert status == 200, body
    return body["recoveries"]  # type: ignore[no-any-return]


async def test_a_round_trip_ends_on_the_starting_site_with_both_legs_journaled(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, DRILL_CONFIG) as (daemon, _, _):
        await both_up(daemon)
        status, body = await drill(daemon, hold="1s")
        assert status == 202, body
        assert (body["from"], body["to"], body["kind"], body["hold"]) == ("dorset", "hampshire", "round_trip", 1.0)
        end = await finished(daemon)
        assert end["result"] == "succeeded", end
        assert (await service(daemon))["active"] == "dorset"
        legs = sorted(await recoveries(daemon), key=lambda r: r["run_id"])
        assert [(r["kind"], r["from"], r["to"], r["result"], r["trigger"]) for r in legs] == [
            ("drill", "dorset", "hampshire", "succeeded", "drill"), ("drill", "hampshire", "dorset", "succeeded", "drill")]
        assert legs[0]["timeline"]["verified"] is not None and legs[1]["timeline"]["verified"] is not None
        journaled = await daemon.wait_until(lambda: _events(daemon, "drill_finished"))  # the next group commit
        assert [event["kind"] for event in await _events(daemon, "drill_started")] == ["drill_started"]
        drill_end = journaled[0]
        assert (drill_end["result"], drill_end["runs"]) == ("succeeded", [leg["run_id"] for leg in legs])
        # one log line for the start and one for the end, each the journaled event's, with the drill's fields
        lines = {kind: [line for line in daemon.log_lines if line.get("event") == kind]
                 for kind in ("drill_started", "drill_finished")}
        assert [(line["level"], line["drill"], line["to_site"]) for line in lines["drill_started"]] == [
            ("info", body["id"], "hampshire")], lines
        assert [(line["level"], line["result"], line["runs"]) for line in lines["drill_finished"]] == [
            ("info", "succeeded", drill_end["runs"])], lines
        metrics = await daemon.metrics_with(VIEWER)
        assert 'bcd_drills_total{kind="round_trip",result="succeeded",service="payroll"} 1.0' in metrics
        # no cooldown from the drill: a real failover may start at once (the config's cooldown is 1h)
        status, _, run = await daemon.call("POST", "/api/v1/services/payroll/failover", body={"reason": "real"})
        assert status == 202, run


async def test_a_drill_is_refused_while_the_standby_is_down(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, DRILL_CONFIG) as (daemon, _, hampshire):
        await both_up(daemon)
        hampshire.status = 503
        await daemon.wait_until(lambda: _site_state(daemon, "hampshire", "down"), timeout=15)
        status, body = await drill(daemon)
        assert status == 409, body
        assert body["detail"].startswith("drill refused: site hampshire of payroll is down"), body
        assert await recoveries(daemon) == []
        result = await cli(daemon, "drill", "payroll", "--reason", "from the CLI")
        assert result.returncode == 1 and "HTTP 409: drill refused: site hampshire of payroll is down" in result.stderr, (
            result)


async def test_a_drill_aborts_and_fails_back_when_its_target_degrades_mid_hold(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, DRILL_CONFIG) as (daemon, _, hampshire):
        await holding(daemon)
        hampshire.status = 503
        end = await finished(daemon)
        assert end["result"] == "aborted", end
        assert end["reason"].startswith("target hampshire is") and "back on dorset" in end["reason"], end
        assert "aborted" not in end["reason"], end  # the result says it, once
        assert (await service(daemon))["active"] == "dorset"
        legs = sorted(await recoveries(daemon), key=lambda r: r["run_id"])
        assert [(r["kind"], r["to"], r["result"]) for r in legs] == [("drill", "hampshire", "succeeded"),
                                                                       ("drill", "dorset", "succeeded")]


async def test_a_drill_is_refused_when_its_move_back_would_be_refused_by_a_real_failbacks_cooldown(
        tmp_path: Path) -> None:
    async with api_daemon(tmp_path, SHORT_FAILOVER_COOLDOWN) as (daemon, _, _):
        await after_a_real_failback(daemon)
        status, body = await drill(daemon, hold="1s")
        assert status == 409, body
        assert body["detail"].startswith("drill refused: its move back to dorset would be refused: cooldown: "), body
        assert "(use force)" not in body["detail"], body  # a drill cannot be forced
        assert (await service(daemon))["active"] == "dorset"
        assert [r for r in await recoveries(daemon) if r["kind"] == "drill"] == []


async def test_a_plan_drill_is_refused_when_a_services_move_back_would_be_refused(tmp_path: Path) -> None:
    plans = SHORT_FAILOVER_COOLDOWN + "plans:\n  evacuate: {{from: dorset, to: hampshire}}\n"
    async with api_daemon(tmp_path, plans) as (daemon, _, _):
        await after_a_real_failback(daemon)
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/drill", body={"reason": "plan test"})
        assert status == 409, body
        assert body["detail"].startswith("drill refused: payroll: its move back to dorset would be refused: "
                                         "cooldown: "), body
        assert (await service(daemon))["active"] == "dorset"


async def after_a_real_failback(daemon: Api) -> None:
    """payroll moved to hampshire and back by real runs (the failback forced), then both sites up on dorset."""
    await both_up(daemon)
    for kind, body in (("failover", {"reason": "real"}), ("failback", {"reason": "real", "force": True})):
        status, _, run = await daemon.call("POST", f"/api/v1/services/payroll/{kind}", body=body)
        assert status == 202, run
        await daemon.wait_log(succeeded(run["id"]))
    await both_up(daemon)
    assert (await service(daemon))["active"] == "dorset"

async def test_a_move_back_refused_mid_drill_names_the_command_that_restores_the_service(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, DRILL_CONFIG) as (daemon, _, _):
        body = await holding(daemon)
        status, _, window = await daemon.call("POST", "/api/v1/services/payroll/maintenance", body={
            "site": "dorset", "duration": "1h", "reason": "patching during the drill"})
        assert status == 201, window
        end = await finished(daemon)
        assert (end["result"], end["level"]) == ("aborted", "warning"), end
        assert "NOT back on dorset: the move back was refused: target dorset is in maintenance" in end["reason"], end
        assert ("payroll is left on hampshire: restore it with `bcd failback payroll --reason 'restore after drill "
                f"{body['id']}'`") in end["reason"], end
        alarm = await daemon.wait_log(lambda line: line.get("event") == "drill_not_restored")
        assert (alarm["level"], alarm["origin"], alarm["drill"]) == ("error", "dorset", body["id"]), alarm
        assert (await service(daemon))["active"] == "hampshire"


async def test_the_cli_starts_a_drill(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, DRILL_CONFIG) as (daemon, _, _):
        await both_up(daemon)
        result = await cli(daemon, "drill", "payroll", "--reason", "from the CLI", "--hold", "0s")
        assert result.returncode == 0, result
        assert result.stdout.startswith("drill payroll@"), result.stdout
        assert (await finished(daemon))["result"] == "succeeded"
        bad = await cli(daemon, "drill", "payroll", "--reason", "x", "--hold", "soon")
        assert bad.returncode == 2 and "--hold" in bad.stderr, bad


def succeeded(run_id: int) -> Callable[[dict[str, Any]], bool]:
    """Matches the log line of run `run_id` ending `succeeded`."""
    return lambda line: (line.get("event"), line.get("run_id"), line.get("result")) == ("run_finished", run_id,
                                                                                       "succeeded")


async def _site_state(daemon: Api, site: str, state: str) -> bool:
    return bool((await service(daemon))["sites"][site]["state"] == state)


async def _active(daemon: Api, site: str) -> bool:
    return bool((await service(daemon))["active"] == site)


async def _events(daemon: Api, kind: str) -> list[dict[str, Any]]:
    status, _, body = await daemon.call("GET", "/api/v1/events?service=payroll&limit=500", token=VIEWER)
    assert status == 200, body
    return [event for event in body["events"] if event["kind"] == kind]
