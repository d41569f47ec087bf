"""kill -9 in the middle of a runbook step: after a restart the run is `interrupted`, the service blocked,
no step runs again on its own, and an operator's acknowledgement re-arms automation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from tests.integration.runbooks.daemon_kit import OPERATOR_TOKEN, Estate, sample
from tests.integration.runbooks.runner_kit import SCRIPTS, alive, eventually


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_lines(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    await eventually(lambda: len(lines(path)) >= count, timeout, f"{count} lines in {path}")
    return lines(path)


async def bcd_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bcd", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "BCD_TOKEN": OPERATOR_TOKEN},
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_kill9_mid_step_is_interrupted_blocked_not_rerun_until_acknowledged(
    estate: Estate, tmp_path: Path
) -> None:
    starts = tmp_path / "starts"
    steps = [{"name": "fence", "command": {"argv": [str(SCRIPTS / "runbook-first-run-hangs"), str(starts)]}},
             estate.step()]
    config = estate.config(steps=steps)
    daemon = await estate.start(config)
    estate.dorset.status = 503
    (first_start,) = await wait_lines(starts, 1)
    hung_pid = int(first_start.split()[1])
    try:
        running = await daemon.wait_run(1, lambda r: r["steps"] and r["steps"][0]["outcome"] == "running")
        assert running["result"] == "running"
        daemon.kill9()
        assert daemon.proc is not None
        assert await daemon.proc.wait() == -signal.SIGKILL

        again = await estate.start(config, ok=())
        run = await again.run(1)
        assert run["result"] == "interrupted"
        assert run["detail"] == "the daemon stopped during this run; no step was re-run"
        assert [(s["name"], s["outcome"]) for s in run["steps"]] == [("fence", "interrupted")]
        service = await again.wait_service(lambda s: s["status"] == "blocked")
        assert service["guard"] == "run_interrupted"
        assert service["reason"] == "payroll: run 1 was interrupted; acknowledge to re-arm"
        warning = await again.wait_log(lambda e: e.get("event") == "run_interrupted")
        assert warning["run_id"] == 1

        await estate.probes_of(estate.dorset, 5)  # dorset stays down, hampshire up: automation would act now
        assert lines(starts) == [first_start]  # the step did not run again
        assert [r["id"] for r in await again.runs()] == [1]
        assert estate.steps.requests == []
        assert (await again.service())["status"] == "blocked"
        metrics = await again.metrics()
        assert sample(metrics, "bcd_service_blocked", service="payroll", reason="run_interrupted") == 1
        assert sample(metrics, "bcd_runbook_runs_total", service="payroll", result="interrupted") == 1

        code, out, err = await bcd_cli("ack", "payroll", "--url", again.url, "--reason", "fenced dorset by hand")
        assert (code, out, err) == (0, "payroll: acknowledged 1\n", "")
        rerun = await again.wait_run(2)  # re-armed: the automatic failover goes ahead
        assert (rerun["result"], rerun["trigger"]) == ("succeeded", "auto")
        assert len(lines(starts)) == 2
        assert estate.steps.paths() == ["/switch"]
        service = await again.wait_service(lambda s: s["status"] == "ok")
        assert service["active"] == "hampshire"
        assert (await again.run(1))["acknowledged_by"] == "olive"
    finally:
        if alive(hung_pid):  # the first fence step outlived the daemon killed under it (its own session)
            with contextlib.suppress(ProcessLookupError):
                os.kill(hung_pid, signal.SIGKILL)
