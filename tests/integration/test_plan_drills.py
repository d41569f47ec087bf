"""Plan drills in the real daemon (a subprocess) on loopback HTTP targets: `bcd drill --plan` runs the plan as a
drill and moves the service back, both legs journaled as a drill and no cooldown started, and /metrics counts it
for the plan; the API refuses a plan drill with the reason when a precondition fails, and an unknown plan with
404; a scheduled plan drill's occurrence in its blackout, or refused by the plan drill's own check, is skipped with
the reason once, also across a restart, and a plan drill asked for in the blackout is refused; one due when the
daemon starts (the sites restored up from the journal) drills the plan once, and a restart does not again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.helpers.api import VIEWER, Api, api_daemon
from tests.helpers.daemon import metric_value
from tests.integration.test_drills import DRILL_CONFIG, _site_state, both_up, cli, finished, recoveries, service

PLAN_CONFIG = DRILL_CONFIG + "plans:\n  evacuate: {{from: dorset, to: hampshire}}\n"


async def drill_events(daemon: Api, count: int) -> list[dict[str, Any]] | None:
    """The journaled drill events (a plan drill's name no service) once there are `count`, else None."""
    status, _, body = await daemon.call("GET", "/api/v1/events?limit=500", token=VIEWER)
    assert status == 200, body
    found = [e for e in body["events"] if e["kind"] in ("drill_started", "drill_finished")]
    return found if len(found) >= count else None


async def test_bcd_drill_plan_moves_the_plan_and_back_as_a_drill_with_no_cooldown(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, PLAN_CONFIG) as (daemon, _, _):
        await both_up(daemon)
        result = await cli(daemon, "drill", "--plan", "evacuate", "--reason", "quarterly plan test", "--hold", "1s")
        assert result.returncode == 0, result
        assert result.stdout.startswith("drill plan:evacuate@"), result.stdout
        end = await finished(daemon)
        assert end["result"] == "succeeded", end
        assert (await service(daemon))["active"] == "dorset"
        legs = sorted(await recoveries(daemon), key=lambda r: r["run_id"])
        assert [(r["kind"], r["from"], r["to"], r["result"]) for r in legs] == [
            ("drill", "dorset", "hampshire", "succeeded"), ("drill", "hampshire", "dorset", "succeeded")]
        journaled = await daemon.wait_until(lambda: drill_events(daemon, 2))  # the next group commit
        assert [(e["kind"], e["drill_kind"]) for e in journaled] == [("drill_started", "plan"),
                                                                      ("drill_finished", "plan")], journaled
        metrics = await daemon.metrics_with(VIEWER)
        assert 'bcd_plan_drills_total{plan="evacuate",result="succeeded"} 1.0' in metrics
        assert 'bcd_plan_drills_total{plan="evacuate",result="failed"} 0.0' not in metrics  # unscheduled: no zeros
        last = metric_value(metrics, 'bcd_plan_drill_last_success_timestamp_seconds{plan="evacuate"}')
        assert last is not None and time.time() - 120 < last <= time.time(), metrics
        assert 'bcd_drills_total{kind="round_trip"' not in metrics  # a plan drill is no service's
        status, _, run = await daemon.call("POST", "/api/v1/services/payroll/failover", body={"reason": "real"})
        assert status == 202, run  # the drill started no cooldown (the config's is 1h)
        bad = await cli(daemon, "drill", "payroll", "--plan", "evacuate", "--reason", "x")
        assert bad.returncode == 2 and "one of them" in bad.stderr, bad


async def test_a_plan_drill_is_refused_with_the_reason(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, PLAN_CONFIG) as (daemon, _, hampshire):
        await both_up(daemon)
        hampshire.status = 503
        await daemon.wait_until(lambda: _site_state(daemon, "hampshire", "down"), timeout=15)
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/drill", body={"reason": "x"})
        assert status == 409, body
        assert body["detail"].startswith("drill refused: site hampshire of payroll is down"), body
        status, _, body = await daemon.call("POST", "/api/v1/plans/nowhere/drill", body={"reason": "x"})
        assert status == 404, body
        assert await drill_events(daemon, 1) is None


def scheduled_now() -> str:
    """PLAN_CONFIG with two daily plan drills two minutes ago (due at the start: within LATE): `nightly` of plan
    evacuate in a blackout around today, `homecoming` of plan back, which has nothing to move (payroll is active
    on dorset, not on its `from` site)."""
    now = datetime.now(UTC)
    at = (now - timedelta(minutes=2)).strftime("%H:%M")
    days = f"{(now - timedelta(days=1)).date()}..{(now + timedelta(days=1)).date()}"
    return (PLAN_CONFIG + "  back: {{from: hampshire, to: dorset}}\n"
            f'drills:\n  nightly: {{{{plan: evacuate, at: "every day {at}", blackout: ["{days}"]}}}}\n'
            f'  homecoming: {{{{plan: back, at: "every day {at}"}}}}\n')


async def test_scheduled_plan_drills_are_skipped_with_the_reason_once_also_after_a_restart(tmp_path: Path) -> None:
    config = scheduled_now()
    async with api_daemon(tmp_path, config) as (daemon, _, _):
        skipped = await daemon.wait_log(lambda line: line.get("event") == "drill_skipped" and line["drill"] == "nightly")
        assert (skipped["plan"], skipped["service"]) == ("evacuate", None), skipped
        assert "in its blackout" in skipped["why"], skipped
        # started through operations that carry out plan drills: refused by the plan drill's own check
        refused = await daemon.wait_log(lambda line: line.get("event") == "drill_skipped" and line["drill"] == "homecoming")
        assert refused["why"] == "drill refused: nothing to move: no service of plan back is active on its from site"
        metrics = await daemon.metrics_with(VIEWER)
        assert 'bcd_plan_drills_total{plan="evacuate",result="succeeded"} 0.0' in metrics  # scheduled: shown at 0
        assert metric_value(metrics, 'bcd_plan_drill_last_success_timestamp_seconds{plan="evacuate"}') == 0.0
    async with api_daemon(tmp_path, config) as (daemon, _, _):
        await both_up(daemon)
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/drill", body={"reason": "x"})
        assert status == 409, body
        assert body["detail"].startswith("drill refused: plan evacuate is in a drill blackout (nightly: "), body
        status, _, events = await daemon.call("GET", "/api/v1/events?limit=500", token=VIEWER)
        assert status == 200, events
        assert sorted((e["name"], e["drill_kind"]) for e in events["events"] if e["kind"] == "drill_skipped") == [
            ("homecoming", "plan"), ("nightly", "plan")], events  # skipped once: the restart found them journaled
        assert not any(line.get("event") == "drill_skipped" for line in daemon.log_lines)


async def test_a_scheduled_plan_drill_due_at_the_start_drills_the_plan_once(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, PLAN_CONFIG) as (daemon, _, _):
        await both_up(daemon)  # journaled: the next start begins with both sites up (then re-confirmed)
    at = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%H:%M")  # due at the start: within LATE
    config = PLAN_CONFIG + f'drills:\n  nightly: {{{{plan: evacuate, hold: 1s, at: "every day {at}"}}}}\n'
    async with api_daemon(tmp_path, config) as (daemon, _, _):
        end = await finished(daemon)
        assert (end["plan"], end["result"]) == ("evacuate", "succeeded"), end
        assert (await service(daemon))["active"] == "dorset"
        journaled = await daemon.wait_until(lambda: drill_events(daemon, 2))
        assert [(e["kind"], e["name"], e["plan"], e.get("by")) for e in journaled] == [
            ("drill_started", "nightly", "evacuate", "drills"), ("drill_finished", "nightly", "evacuate", None)]
        legs = await recoveries(daemon)
        assert sorted((r["kind"], r["to"], r["result"]) for r in legs) == [
            ("drill", "dorset", "succeeded"), ("drill", "hampshire", "succeeded")]
        metrics = await daemon.metrics_with(VIEWER)
        assert 'bcd_plan_drills_total{plan="evacuate",result="succeeded"} 1.0' in metrics
        assert 'bcd_plan_drills_total{plan="evacuate",result="failed"} 0.0' in metrics  # scheduled: every result
    async with api_daemon(tmp_path, config) as (daemon, _, _):  # a restart: the occurrence is in the journal
        await both_up(daemon)
        assert await drill_events(daemon, 3) is None
        assert not any(line.get("event") == "drill_started" for line in daemon.log_lines)
