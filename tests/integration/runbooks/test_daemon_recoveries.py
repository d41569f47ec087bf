"""Recoveries end to end: `bcd run` as a subprocess probing two real HTTP sites; the active site's server is
stopped, the automatic failover runs, and the recovery's timeline comes back from the API, the CLI and
/metrics, consistent with the run's step timestamps and measured against the RTO (met, then missed with a
tiny RTO, when the metric moves and the rule BcdRecoveryObjectiveMissed fires on the scraped values)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bcd.web.openapi import document
from tests.helpers.prometheus import RULES, promtool_binary
from tests.integration.runbooks.daemon_kit import Bcd, Estate, sample

PHASES = ("detection", "decision", "execution", "verification")


def runbook(estate: Estate, settle: str) -> list[dict[str, Any]]:
    """Switch (a POST to the recorder), settle, then verify the target healthy."""
    return [estate.step(), {"name": "settle", "sleep": {"duration": settle}},
            {"name": "verify", "wait_healthy": {"site": "{to_site}", "within": "10s"}}]


async def fail_over(estate: Estate, rto: str, settle: str) -> tuple[Bcd, dict[str, Any], dict[str, Any]]:
    """Start the daemon with `rto`, stop dorset's server; the automatic failover's run and its recovery."""
    config = estate.config(steps=runbook(estate, settle))
    config["defaults"]["objectives"] = {"rto": rto, "rpo": "1m"}
    daemon = await estate.start(config)
    await estate.dorset.stop()  # the active site's server is gone: connection refused
    run = await daemon.wait_first_run()
    assert (run["result"], run["kind"], run["trigger"]) == ("succeeded", "failover", "auto"), run
    reply = await daemon.call("GET", "/api/v1/services/payroll/recoveries")
    assert reply.status == 200, reply
    (recovery,) = reply.body["recoveries"]
    return daemon, run, recovery


async def test_a_failover_keeps_its_timeline_consistent_with_its_steps(estate: Estate) -> None:
    daemon, run, recovery = await fail_over(estate, "5m", "300ms")
    assert (recovery["run_id"], recovery["kind"], recovery["trigger"], recovery["from"], recovery["to"]) == (
        run["id"], "failover", "auto", "dorset", "hampshire")
    timeline, phases, steps = recovery["timeline"], recovery["phases"], {s["name"]: s for s in run["steps"]}
    assert (timeline["failing"], timeline["started"], timeline["verified"]) == (
        run["detected_at"], run["started"], run["verified_at"])

    async def events() -> list[dict[str, Any]]:
        reply = await daemon.call("GET", "/api/v1/events?service=payroll&limit=500")
        found: list[dict[str, Any]] = reply.body["events"]
        return found

    # events are written by the journal's writer a moment after the run's row: wait for the run's end event
    down = await daemon.poll(events, lambda found: any(e["kind"] == "run_finished" for e in found), "run_finished")
    (confirmed,) = [e for e in down if e["kind"] == "site_transition" and e["site"] == "dorset" and e["to"] == "down"]
    assert timeline["decided"] == confirmed["at"]  # the decision: dorset confirmed down
    (verified,) = [e for e in down if e["kind"] == "target_verified"]  # journaled as it happened
    assert (verified["at"], verified["site"], verified["run_id"], verified["step"]) == (
        timeline["verified"], "hampshire", run["id"], "verify")
    # execution runs from the run's start to the verifying step's start; verification is that step
    assert timeline["executed"] == steps["verify"]["started"]
    assert timeline["started"] <= steps["switch"]["started"] <= steps["settle"]["ended"] <= timeline["executed"]
    assert timeline["verified"] <= steps["verify"]["ended"]
    assert timeline["failing"] < timeline["decided"] <= timeline["started"] < timeline["executed"] < timeline["verified"]
    assert phases["detection"] > 0 and phases["execution"] >= 0.3  # at least the settle step
    assert phases["decision"] < 1.0  # automatic: decided and started at once (give or take a loaded machine)
    assert sum(phases[p] for p in PHASES) == pytest.approx(recovery["total"])
    assert recovery["total"] == pytest.approx(timeline["verified"] - timeline["failing"])
    assert (recovery["rto"], recovery["rto_met"], recovery["plan"]) == (300.0, True, None)
    jsonschema.validate(recovery, document()["components"]["schemas"]["Recovery"])  # as the OpenAPI says

    service = await daemon.service()
    assert service["objectives"] == {"rto": 300.0, "rpo": 60.0}
    metrics = await daemon.metrics()
    assert sample(metrics, "bcd_recovery_seconds_count", service="payroll", kind="failover") == 1
    assert sample(metrics, "bcd_recovery_seconds_sum", service="payroll", kind="failover") == pytest.approx(
        recovery["total"])
    assert sample(metrics, "bcd_recovery_objective_missed_total", service="payroll", kind="failover") == 0
    assert sample(metrics, "bcd_objective_seconds", service="payroll", objective="rto") == 300

    cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bcd", "recoveries", "payroll", "--url",
                                                   daemon.url], capture_output=True, text=True, timeout=30,
                                  check=False)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0] == "payroll: RTO 5m, RPO 1m"
    assert f"{run['id']:>5} " in lines[2] and "dorset→hampshire" in lines[2] and lines[2].endswith(" met")
    missing = await daemon.call("GET", "/api/v1/services/nope/recoveries")
    assert (missing.status, missing.content_type) == (404, "application/problem+json")
    unknown = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bcd", "recoveries", "nope", "--url",
                                                       daemon.url], capture_output=True, text=True, timeout=30,
                                      check=False)
    assert unknown.returncode == 1 and "no service named 'nope'" in unknown.stderr, unknown.stderr


async def test_a_failover_slower_than_a_tiny_rto_is_missed_and_the_rule_fires(estate: Estate, tmp_path: Path) -> None:
    config = estate.config(steps=runbook(estate, "1500ms"))
    config["defaults"]["objectives"] = {"rto": "1s"}
    daemon = await estate.start(config)
    before = sample(await daemon.metrics(), "bcd_recovery_objective_missed_total", service="payroll",
                    kind="failover")
    await estate.dorset.stop()
    await daemon.wait_first_run()
    (recovery,) = (await daemon.call("GET", "/api/v1/services/payroll/recoveries")).body["recoveries"]
    assert recovery["total"] > 1.5 and (recovery["rto"], recovery["rto_met"]) == (1.0, False)
    after = sample(await daemon.metrics(), "bcd_recovery_objective_missed_total", service="payroll", kind="failover")
    assert (before, after) == (0, 1)
    cli = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bcd", "recoveries", "payroll", "--url",
                                                   daemon.url], capture_output=True, text=True, timeout=30,
                                  check=False)
    assert cli.stdout.splitlines()[2].endswith(" MISSED"), cli.stdout
    assert_rule_fires_on(tmp_path, before, after)


async def test_an_operators_failover_and_failback_are_recoveries_of_their_kind(estate: Estate) -> None:
    """Manual mode: the decision phase is the operator's time to react (dorset down to the run's start); the
    planned failback has no failure, so it is measured from its decision (its start)."""
    failback = {"runbook": "move", "mode": "manual", "cooldown": "0s"}
    config = estate.config(steps=runbook(estate, "100ms"),
                           services={"payroll": estate.service(mode="manual", failback=failback)})
    config["defaults"]["objectives"] = {"rto": "10m"}
    daemon = await estate.start(config)
    estate.dorset.status = 503
    await daemon.wait_service(lambda s: s["status"] == "failover_pending")
    await estate.probes_of(estate.dorset, 3)  # the operator takes a while
    reply = await daemon.transfer("failover", reason="dorset is down, moving")
    assert reply.status == 202, reply
    assert (await daemon.wait_run(reply.body["id"]))["result"] == "succeeded"
    estate.dorset.status = 200
    await daemon.wait_service(lambda s: s["sites"]["dorset"]["state"] == "up" and s["status"] == "ok")
    back = await daemon.transfer("failback", reason="dorset is fixed")
    assert back.status == 202, back
    assert (await daemon.wait_run(back.body["id"]))["result"] == "succeeded"

    failback_recovery, failover = (await daemon.call("GET", "/api/v1/services/payroll/recoveries")).body["recoveries"]
    assert (failover["kind"], failover["trigger"], failover["rto_met"]) == ("failover", "olive", True)
    assert failover["phases"]["decision"] >= 0.5  # three more probes at 250 ms before the operator acted
    assert failover["timeline"]["decided"] < failover["timeline"]["started"]
    assert (failback_recovery["kind"], failback_recovery["trigger"], failback_recovery["from"]) == (
        "failback", "olive", "hampshire")
    timeline = failback_recovery["timeline"]
    assert timeline["failing"] is None and failback_recovery["phases"]["detection"] is None
    assert timeline["decided"] == timeline["started"]
    assert failback_recovery["total"] == pytest.approx(timeline["verified"] - timeline["started"])
    metrics = await daemon.metrics()
    for kind in ("failover", "failback"):
        assert sample(metrics, "bcd_recovery_seconds_count", service="payroll", kind=kind) == 1


def assert_rule_fires_on(tmp_path: Path, before: float, after: float) -> None:
    """promtool evaluates BcdRecoveryObjectiveMissed (alerts.yml's expression, its annotations left out) on
    the scraped values: quiet before, firing after the miss."""
    tool = promtool_binary()
    if tool is None:
        pytest.skip("promtool not installed (make deps installs the Debian package)")
    (rule,) = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
               if rule.get("alert") == "BcdRecoveryObjectiveMissed"]
    rule.pop("annotations")
    (tmp_path / "rule.yml").write_text(yaml.safe_dump({"groups": [{"name": "recoveries", "rules": [rule]}]}))
    labels = {"job": "bcd", "instance": "bcd:9847", "service": "payroll", "kind": "failover"}
    series = "bcd_recovery_objective_missed_total{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    (tmp_path / "rule.test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rule.yml"], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": [{"series": series, "values": f"{before:g}x10 {after:g}x10"}],
                   "alert_rule_test": [
                       {"eval_time": "9m", "alertname": "BcdRecoveryObjectiveMissed", "exp_alerts": []},
                       {"eval_time": "12m", "alertname": "BcdRecoveryObjectiveMissed",
                        "exp_alerts": [{"exp_labels": {**labels, "severity": "warning"}}]}]}],
    }))
    check = subprocess.run([tool, "test", "rules", str(tmp_path / "rule.test.yml")], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
