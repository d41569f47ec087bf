"""kill -9 in the middle of a runbook step: after a restart the run is `interrupted`, the service blocked,
no step runs again on its own, and an operator's acknowledgement re-arms automation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.helpers.runner_kit import SCRIPTS, alive, eventually
from tests.integration.runbooks.daemon_kit import OPERATOR_TOKEN, Bcd, Estate, sample

INTERRUPTED = "the daemon stopped during this run; no step was re-run"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def wait_lines(path: Path, count: int, timeout: float = 15.0) -> list[str]:
    await eventually(lambda: len(lines(path)) >= count, timeout, f"{count} lines in {path}")
    return lines(path)


def journaled_pgid(estate: Estate, run_id: int, seq: int = 1) -> int | None:
    """The process group the daemon journaled for a step (read from its SQLite file, as a crash leaves it)."""
    with contextlib.closing(sqlite3.connect(estate.state_dir / "bcd.sqlite")) as db:
        row = db.execute("SELECT pgid FROM steps WHERE run_id = ? AND seq = ?", (run_id, seq)).fetchone()
    return row[0] if row else None


async def wait_pgid_journaled(estate: Estate, pid: int) -> None:
    """Until the step's process group (`pid`: the step's child leads it) is in the journal: a kill -9 before
    that moment could not know of it."""
    await eventually(lambda: journaled_pgid(estate, 1) == pid, 15, f"process group {pid} journaled")


def child_of(parent: int, argv: list[str]) -> int | None:
    """The pid of a child of `parent` that runs `argv`, if any."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if (int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent
                        and (entry / "cmdline").read_bytes().split(b"\0")[:-1] == [a.encode() for a in argv]):
                    return int(entry.name)
    return None


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
        await wait_pgid_journaled(estate, hung_pid)
        daemon.kill9()
        assert daemon.proc is not None
        assert await daemon.proc.wait() == -signal.SIGKILL

        again = await estate.start(config, ok=())
        run = await again.run(1)
        assert run["result"] == "interrupted"
        orphan = f"step 1 'fence' left process group {hung_pid} running: {hung_pid} (sleep); terminated"
        assert run["detail"] == f"the daemon stopped during this run; no step was re-run; {orphan}"
        assert [(s["name"], s["outcome"]) for s in run["steps"]] == [("fence", "interrupted")]
        assert not alive(hung_pid)
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


SLEEP = ["/bin/sleep", "300"]


async def crash_mid_sleep(estate: Estate, config: dict[str, Any]) -> tuple[Bcd, int]:
    """Start a daemon whose failover runbook runs `/bin/sleep 300`, fail dorset, and kill -9 the daemon once
    the step has started and its process group is journaled; the restarted daemon and the sleep's pid."""
    daemon = await estate.start(config)
    estate.dorset.status = 503
    await daemon.wait_log(lambda e: e.get("event") == "step_started", timeout=30)
    assert daemon.proc is not None
    parent = daemon.proc.pid
    await eventually(lambda: child_of(parent, SLEEP) is not None, 15, "the step's sleep running")
    pid = child_of(parent, SLEEP)
    assert pid is not None
    await wait_pgid_journaled(estate, pid)
    daemon.kill9()
    assert await daemon.proc.wait() == -signal.SIGKILL
    assert alive(pid)  # the step's process group outlived the daemon (its own session)
    return await estate.start(config, ok=()), pid


async def test_restart_terminates_the_process_group_a_crashed_step_left(estate: Estate) -> None:
    config = estate.config(steps=[{"name": "wait", "command": {"argv": SLEEP}, "timeout": "10m"}])
    pid = 0
    try:
        again, pid = await crash_mid_sleep(estate, config)
        assert not alive(pid)  # ended before the daemon was ready
        run = await again.run(1)
        orphan = f"step 1 'wait' left process group {pid} running: {pid} (sleep); terminated"
        assert (run["result"], run["detail"]) == ("interrupted", f"{INTERRUPTED}; {orphan}")
        assert [(s["outcome"], s["output"]) for s in run["steps"]] == [("interrupted", orphan)]
        line = await again.wait_log(lambda e: e.get("event") == "orphan_process_group")
        assert (line["run_id"], line["pgid"], line["pids"], line["terminated"], line["left"]) == (1, pid, [pid], True, [])
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_with_kill_orphans_false_the_group_is_reported_and_left_alone(estate: Estate) -> None:
    config = estate.config(steps=[{"name": "wait", "command": {"argv": SLEEP}, "timeout": "10m"}],
                           runner={"kill_orphans": False})
    pid = 0
    try:
        again, pid = await crash_mid_sleep(estate, config)
        run = await again.run(1)
        orphan = f"step 1 'wait' left process group {pid} running: {pid} (sleep); not terminated " \
                 "(runner.kill_orphans is false)"
        assert (run["result"], run["detail"]) == ("interrupted", f"{INTERRUPTED}; {orphan}")
        line = await again.wait_log(lambda e: e.get("event") == "orphan_process_group")
        assert (line["pgid"], line["terminated"]) == (pid, False)
        assert alive(pid)
    finally:
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
