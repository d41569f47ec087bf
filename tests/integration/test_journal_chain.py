"""The chained journal of a running daemon (a subprocess on real files): `bcd journal verify` checks it while
the daemon runs (read-only), a run and its steps are covered, a SIGHUP reload is chained with who sent it, a
plan run is covered, and a row changed after the daemon stopped is named."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bcd.journal.ledger_check import entries
from tests.helpers.daemon import write_config
from tests.integration.runbooks.daemon_kit import Estate, open_estate
from tests.integration.test_plans import estate as plan_estate
from tests.integration.test_plans import wait_plan


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with open_estate(tmp_path) as estate:
        yield estate


async def verify(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bcd", "journal", "verify", "-c", str(config),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_a_running_daemons_journal_verifies_and_a_reload_and_a_run_are_chained(estate: Estate) -> None:
    config = estate.config(services={"payroll": estate.service(mode="manual")})
    daemon = await estate.start(config)
    await daemon.wait_log(lambda line: line["event"] == "config_load_journaled" and line["by"] == "start")
    started = await daemon.transfer("failover", force=True)
    assert started.status == 202, started
    run = await daemon.wait_run(started.body["id"])
    assert run["result"] == "succeeded"
    write_config(estate.config_path, {**config, "defaults": {**config["defaults"], "fall": 3}})
    daemon.send(signal.SIGHUP)
    reloaded = await daemon.wait_log(lambda line: line["event"] == "config_load_journaled" and line["by"] != "start")
    assert reloaded["by"].startswith(f"SIGHUP from pid {os.getpid()} (")  # this test process sent it
    assert reloaded["changed"] == 1
    code, out = await verify(estate.config_path)  # while the daemon runs and writes
    assert code == 0, out
    assert " intact: " in out and " from genesis, " in out
    assert await daemon.stop() == 0
    with contextlib.closing(sqlite3.connect(estate.state_dir / "bcd.sqlite")) as db:
        (seq,) = db.execute("SELECT max(seq) FROM ledger WHERE kind = 'steps'").fetchone()
        kinds = {entry[2] for entry in entries(db)}  # events carry their entries in their own rows
        db.execute("UPDATE steps SET output = 'all fine'")
        db.commit()
    assert kinds >= {"genesis", "config", "events", "runs", "steps"}
    code, out = await verify(estate.config_path)
    assert code == 1
    assert f"NOT intact: the chain breaks at entry {seq}: steps row {run['id']}/1 differs from entry {seq} " in out


async def test_a_plan_run_of_the_daemon_is_chained_and_a_changed_plan_run_row_is_named(tmp_path: Path) -> None:
    async with plan_estate(tmp_path, {"directory": [], "payroll": ["directory"]},
                           "{from: dorset, to: hampshire}") as (daemon, _):
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/run", body={"reason": "drill"})
        assert status == 202, body
        run = await wait_plan(daemon, body["plan_run"]["id"], lambda run: run["ended"] is not None)
        assert run["state"] == "succeeded"
        code, out = await verify(tmp_path / "bcd.yaml")  # while the daemon runs
        assert code == 0, out
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "bcd.sqlite")) as db:
        (seq,) = db.execute("SELECT max(seq) FROM ledger WHERE kind = 'plan_runs'").fetchone()
        db.execute("UPDATE plan_runs SET state = 'failed'")  # as a tamperer would, after the daemon stopped
        db.commit()
    code, out = await verify(tmp_path / "bcd.yaml")
    assert code == 1
    assert (f"NOT intact: the chain breaks at entry {seq}: plan_runs row {run['id']} differs from entry {seq} "
            "(state: 'succeeded' in the ledger, 'failed' in the row)") in out
