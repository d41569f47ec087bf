"""A drill whose daemon is killed (SIGKILL) or stopped mid-drill, in the real daemon (a subprocess) restarted on
the same journal. A runbook drill is killed while its drill step waits on a FIFO (the known point): the restarted
daemon runs the runbook's cleanup steps itself, once, as a run of the drill, and ends the drill `interrupted`
saying so (BcdDrillFailed's counter); a cleanup that fails says so too; a second restart runs nothing again, nor
does a restart after one killed during that cleanup. A round trip killed while it holds on the standby moves
nothing on restart: its end names where the service was left and the command that moves it back."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.api import VIEWER, Api, api_daemon
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import SCRIPTS, eventually
from tests.integration.test_drill_runbooks import config, steps
from tests.integration.test_drills import DRILL_CONFIG, _active, _events, both_up, drill, service

INTERRUPTED = 'bcd_drills_total{{kind="{kind}",result="interrupted",service="payroll"}} 1.0'


async def restart_after_kill(daemon: Api) -> None:
    """SIGKILL the daemon, then start it again on the same config and journal, ready."""
    daemon.send(signal.SIGKILL)
    assert daemon.proc is not None
    await daemon.proc.wait()
    await daemon.start()
    await daemon.wait_ready(timeout=30)


async def drill_end(daemon: Api) -> dict[str, Any]:
    """The drill's end as the restarted daemon logged it (on a timeout: what it logged of drills and runs)."""
    try:
        return await daemon.wait_log(lambda line: line.get("event") == "drill_finished" and "result" in line,
                                     timeout=30)
    except TimeoutError:
        story = [line for line in daemon.log_lines if "drill" in str(line.get("event")) or "run" in str(
            line.get("event")) or "step" in str(line.get("event"))]
        raise AssertionError(f"no drill_finished; the daemon logged: {story}") from None


async def runs(daemon: Api) -> list[dict[str, Any]]:
    status, _, body = await daemon.call("GET", "/api/v1/runs?service=payroll", token=VIEWER)
    assert status == 200, body
    return sorted(body["runs"], key=lambda run: run["id"])  # type: ignore[no-any-return]


@pytest.mark.parametrize(("cleanup_status", "said"), [
    (200, "its cleanup ran after the restart (run 2) and completed"),
    (500, "its cleanup ran after the restart (run 2) and failed: finish it by hand (run 2's steps)")])
async def test_a_runbook_drill_killed_mid_step_has_its_cleanup_run_once_by_the_restarted_daemon(
        tmp_path: Path, cleanup_status: int, said: str) -> None:
    starts, fifo = tmp_path / "starts", tmp_path / "hold.fifo"
    os.mkfifo(fifo)
    waits = f'{{name: wait, command: {{argv: ["{SCRIPTS / "drill-step-waits"}", "{starts}", "{fifo}"]}}}}'
    async with Recorder((200, 200, cleanup_status)) as recorder, api_daemon(tmp_path, config(recorder, waits)) as (
            daemon, _, _):
        try:
            await both_up(daemon)
            status, body = await drill(daemon, kind="runbook")
            assert status == 202, body
            await eventually(lambda: starts.exists() and starts.read_text().startswith("started"), 15,
                             "the drill step waiting on the FIFO")
            await daemon.wait_until(lambda: _step_running(daemon, 1, "wait"))
            assert recorder.paths() == ["/copy/up", "/copy/check"]  # no cleanup yet
            await restart_after_kill(daemon)

            end = await drill_end(daemon)
            assert end["result"] == "interrupted", end
            assert end["reason"] == f"the daemon stopped during it; {said}", end
            assert end["runs"] == [1, 2], end
            assert recorder.paths() == ["/copy/up", "/copy/check", "/copy/down"]
            outcome = "succeeded" if cleanup_status == 200 else "failed"
            assert await steps(daemon, 2) == [("cleanup", "copy down", outcome)]
            assert [(run["id"], run["result"], run["trigger"]) for run in await runs(daemon)] == [
                (1, "interrupted", "drill"), (2, "succeeded" if cleanup_status == 200 else "failed", "drill")]
            journaled = await daemon.wait_until(lambda: _events(daemon, "drill_finished"))  # the next group commit
            assert (journaled[0]["result"], journaled[0]["runs"]) == ("interrupted", [1, 2])
            assert journaled[0]["reason"].endswith(said)
            (cleanup_started,) = [event for event in await _events(daemon, "run_started") if event["run_id"] == 2]
            assert "its cleanup after a restart" in cleanup_started["reason"], cleanup_started
            assert INTERRUPTED.format(kind="runbook") in await daemon.metrics_with(VIEWER)  # BcdDrillFailed

            await restart_after_kill(daemon)  # again: the drill has ended, its cleanup is not run twice
            assert len(await runs(daemon)) == 2
            assert recorder.paths() == ["/copy/up", "/copy/check", "/copy/down"]
            assert len(await _events(daemon, "drill_finished")) == 1
        finally:
            with contextlib.suppress(OSError):  # the killed daemon's step, if the restart did not end it
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_round_trip_killed_on_the_standby_is_not_moved_back_and_says_how_to(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, DRILL_CONFIG) as (daemon, _, _):
        await both_up(daemon)
        status, body = await drill(daemon, hold="10m")
        assert status == 202, body
        await daemon.wait_until(lambda: _active(daemon, "hampshire"), timeout=15)
        await daemon.wait_log(lambda line: line.get("event") == "run_finished" and line.get("run_id") == 1)
        await restart_after_kill(daemon)  # killed while the drill holds on hampshire

        end = await drill_end(daemon)
        assert end["result"] == "interrupted", end
        assert end["reason"] == (
            "the daemon stopped during it; payroll was left active on hampshire (the drill started on dorset); "
            "nothing was moved back automatically: to restore it, bcd failback payroll --to dorset --reason '…'")
        assert (await service(daemon))["active"] == "hampshire"
        assert [(run["id"], run["to"], run["result"]) for run in await runs(daemon)] == [
            (1, "hampshire", "succeeded")]  # no move back started
        assert INTERRUPTED.format(kind="round_trip") in await daemon.metrics_with(VIEWER)  # BcdDrillFailed


async def test_a_cleanup_cut_short_after_a_restart_is_not_run_again(tmp_path: Path) -> None:
    """Stopped cleanly mid-step (the drill is left to the next start), then killed during the cleanup that start
    runs: the start after says the cleanup was cut short and runs nothing."""
    fifos = {name: tmp_path / f"{name}.fifo" for name in ("step", "cleanup")}
    starts = {name: tmp_path / f"{name}.starts" for name in fifos}
    for fifo in fifos.values():
        os.mkfifo(fifo)
    waits = {name: f'{{name: {name} waits, command: {{argv: ["{SCRIPTS / "drill-step-waits"}", "{starts[name]}", '
             f'"{fifos[name]}"]}}}}' for name in fifos}
    async with Recorder() as recorder:
        text = config(recorder, waits["step"]).replace("    cleanup: [", "    cleanup: [" + waits["cleanup"].replace(
            "{", "{{").replace("}", "}}") + ", ")
        async with api_daemon(tmp_path, text) as (daemon, _, _):
            try:
                await both_up(daemon)
                status, body = await drill(daemon, kind="runbook")
                assert status == 202, body
                await daemon.wait_until(lambda: _step_running(daemon, 1, "step waits"))
                assert await daemon.stop() == 0  # a clean stop: the drill is left to the next start
                assert any(line.get("event") == "drill_left_to_restart" for line in daemon.log_lines)
                await daemon.start()
                await daemon.wait_ready(timeout=30)
                await daemon.wait_until(lambda: _step_running(daemon, 2, "cleanup waits"))
                await restart_after_kill(daemon)  # killed during the cleanup

                end = await drill_end(daemon)
                assert (end["result"], end["runs"]) == ("interrupted", [1, 2]), end
                assert end["reason"] == (
                    "the daemon stopped during it; its cleanup ran after an earlier restart (run 2) and was cut "
                    "short, not run again: finish it by hand (run 2's steps)"), end
                assert len(starts["cleanup"].read_text().splitlines()) == 1
                assert "/copy/down" not in recorder.paths()
                assert [(run["id"], run["result"]) for run in await runs(daemon)] == [
                    (1, "interrupted"), (2, "interrupted")]
            finally:
                for fifo in fifos.values():
                    with contextlib.suppress(OSError):
                        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def _step_running(daemon: Api, run_id: int, name: str) -> bool:
    status, _, body = await daemon.call("GET", f"/api/v1/runs/{run_id}", token=VIEWER)
    return status == 200 and any(step["name"] == name and step["outcome"] == "running" for step in body["steps"])
