"""Runbook drills in the real daemon (a subprocess): the service's `drill_runbook` runs as one run of the drill
(trigger `drill`, a recovery of kind `drill`, moving nothing), then that runbook's `cleanup` steps whatever came
of them; a real HTTP server on loopback records what each step sent. A drill step failing still runs the cleanup
and fails the drill with the reason; a site degrading mid-drill aborts it, then the cleanup runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.api import VIEWER, Api, api_daemon
from tests.helpers.recorder import Recorder
from tests.integration.test_drills import DRILL_CONFIG, _events, both_up, drill, finished, recoveries, service


def config(recorder: Recorder, last: str = "") -> str:
    """DRILL_CONFIG with payroll's drill runbook `rehearse` calling `recorder` (`last`: its last drill step)."""
    url = recorder.url("")
    last = last or f'{{name: copy ok, http: {{url: "{url}/copy/ok"}}}}'
    runbook = (f'  rehearse:\n    steps: [{{name: copy up, http: {{url: "{url}/copy/up"}}}},\n'
               f'            {{name: copy check, http: {{url: "{url}/copy/check"}}}}, {last}]\n'
               f'    cleanup: [{{name: copy down, http: {{url: "{url}/copy/down"}}}}]\n')
    escaped = runbook.replace("{", "{{").replace("}", "}}")  # DRILL_CONFIG is a format string
    return DRILL_CONFIG.replace("runbooks:\n", "runbooks:\n" + escaped).replace(
        "    labels: {{owner: dorset-cc}}\n", "    labels: {{owner: dorset-cc}}\n    drill_runbook: rehearse\n")


async def steps(daemon: Api, run_id: int) -> list[tuple[str, str, str]]:
    status, _, body = await daemon.call("GET", f"/api/v1/runs/{run_id}", token=VIEWER)
    assert status == 200, body
    return [(step["phase"], step["name"], step["outcome"]) for step in body["steps"]]


async def test_a_runbook_drill_runs_its_steps_then_its_cleanup(tmp_path: Path, recorder: Recorder) -> None:
    async with api_daemon(tmp_path, config(recorder)) as (daemon, _, _):
        await both_up(daemon)
        status, body = await drill(daemon, kind="runbook")
        assert status == 202, body
        assert (body["kind"], body["from"], body["to"]) == ("runbook", "dorset", "dorset")
        end = await finished(daemon)
        assert end["result"] == "succeeded", end
        assert recorder.paths() == ["/copy/up", "/copy/check", "/copy/ok", "/copy/down"]
        (run,) = await recoveries(daemon)
        assert (run["kind"], run["trigger"], run["from"], run["to"], run["result"]) == (
            "drill", "drill", "dorset", "dorset", "succeeded")
        assert await steps(daemon, run["run_id"]) == [
            ("main", "copy up", "succeeded"), ("main", "copy check", "succeeded"), ("main", "copy ok", "succeeded"),
            ("cleanup", "copy down", "succeeded")]
        assert (await service(daemon))["active"] == "dorset"
        journaled = await daemon.wait_until(lambda: _events(daemon, "drill_finished"))  # the next group commit
        assert (journaled[0]["drill_kind"], journaled[0]["result"], journaled[0]["runs"]) == (
            "runbook", "succeeded", [run["run_id"]])
        metrics = await daemon.metrics_with(VIEWER)
        assert 'bcd_drills_total{kind="runbook",result="succeeded",service="payroll"} 1.0' in metrics
        # no cooldown from the drill: a real failover may start at once (the config's cooldown is 1h)
        status, _, moved = await daemon.call("POST", "/api/v1/services/payroll/failover", body={"reason": "real"})
        assert status == 202, moved


async def test_a_failing_drill_step_still_runs_the_cleanup_and_fails_the_drill(tmp_path: Path) -> None:
    async with Recorder((200, 409, 200)) as recorder, api_daemon(tmp_path, config(recorder)) as (daemon, _, _):
        await both_up(daemon)
        status, body = await drill(daemon, kind="runbook")
        assert status == 202, body
        end = await finished(daemon)
        assert end["result"] == "failed", end
        assert "a step failed; cleanup completed" in end["reason"], end
        assert recorder.paths() == ["/copy/up", "/copy/check", "/copy/down"]  # /copy/ok never ran
        (run,) = await recoveries(daemon)
        assert await steps(daemon, run["run_id"]) == [
            ("main", "copy up", "succeeded"), ("main", "copy check", "failed"), ("cleanup", "copy down", "succeeded")]
        # the drill's failure is the drill's: nothing to acknowledge, the service not blocked (no page)
        body = await service(daemon)
        assert (body["status"], body["active"]) == ("ok", "dorset"), body


async def test_a_site_degrading_mid_drill_aborts_it_then_the_cleanup_runs(tmp_path: Path, recorder: Recorder) -> None:
    long_step = "{name: soak, sleep: {duration: 10m}}"
    async with api_daemon(tmp_path, config(recorder, long_step)) as (daemon, _, hampshire):
        await both_up(daemon)
        status, body = await drill(daemon, kind="runbook")
        assert status == 202, body
        await daemon.wait_log(lambda line: line.get("event") == "step_started" and line.get("step") == "soak",
                              timeout=15)
        hampshire.status = 503
        end: dict[str, Any] = await finished(daemon)
        assert end["result"] == "aborted", end
        assert end["reason"].startswith("site hampshire is degraded") and "cleanup completed" in end["reason"], end
        assert not end["reason"].startswith("aborted"), end  # the result says it
        assert recorder.paths() == ["/copy/up", "/copy/check", "/copy/down"]
        (run,) = await recoveries(daemon)
        assert (await steps(daemon, run["run_id"]))[-2:] == [("main", "soak", "aborted"),
                                                             ("cleanup", "copy down", "succeeded")]
