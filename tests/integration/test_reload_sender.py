"""Who reloaded the daemon (a subprocess on real files), as its journal keeps it: a SIGHUP names its sender's
pid, name and uid (this test process); `POST /api/v1/reload` and `bcd reload` name the token; a broken config
sent through the API is refused with its `FILE:LINE` problems and changes nothing; the journal still verifies."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.helpers.api import VIEWER, Api, api_daemon
from tests.helpers.daemon import metric_value

OWN_NAME = Path("/proc/self/comm").read_text().strip()  # what the daemon reads of this process: python, pytest


def config_entries(state: Path) -> list[dict[str, Any]]:
    """The journal's `config` entries, oldest first (read while the daemon runs: WAL readers do not block it)."""
    with contextlib.closing(sqlite3.connect(f"file:{state / 'bcd.sqlite'}?mode=ro", uri=True)) as db:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM ledger WHERE kind = 'config' ORDER BY seq")]


async def verify(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bcd", "journal", "verify", "-c", str(config),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def rewrite(daemon: Api, old: str, new: str) -> None:
    text = daemon.config_path.read_text()
    assert old in text
    daemon.config_path.write_text(text.replace(old, new))


async def test_a_sighup_reload_is_journaled_with_its_senders_pid_name_and_uid(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as (daemon, _, _):
        rewrite(daemon, "fall: 2", "fall: 3")
        os.kill(daemon.proc.pid, signal.SIGHUP)  # type: ignore[union-attr]
        by = f"SIGHUP from pid {os.getpid()} ({OWN_NAME}, user {getpass.getuser()}, uid {os.getuid()})"
        line = await daemon.wait_log(lambda e: e.get("event") == "config_load_journaled" and e.get("by") != "start")
        assert line["by"] == by
        entry = config_entries(tmp_path / "state")[-1]
        assert entry["by"] == by
        assert entry["diff"]["changed"] == {"defaults.fall": [2, 3]}
        code, out = await verify(daemon.config_path)
        assert code == 0, out


async def test_a_reload_through_the_api_and_the_cli_is_journaled_with_the_token_and_a_broken_config_changes_nothing(
    tmp_path: Path,
) -> None:
    async with api_daemon(tmp_path) as (daemon, _, _):
        state = tmp_path / "state"
        status, _, body = await daemon.call("POST", "/api/v1/reload", token=VIEWER)
        assert status == 403, body  # a viewer may not
        assert "grafana is a viewer; this needs an operator" in body["detail"]
        rewrite(daemon, "fall: 2", "fall: 4")
        status, _, body = await daemon.call("POST", "/api/v1/reload")
        assert (status, body) == (200, {"reloaded": True, "by": "api: alice", "detail": "config reloaded"})
        entry = config_entries(state)[-1]
        assert entry["by"] == "api: alice"
        assert entry["diff"]["changed"] == {"defaults.fall": [2, 4]}

        entries = len(config_entries(state))
        good = daemon.config_path.read_text()
        rewrite(daemon, "rise: 1", "rise: -1")
        rewrite(daemon, "    active: dorset\n", "    active: dorset\n    bogus: 1\n")
        status, content_type, body = await daemon.call("POST", "/api/v1/reload")
        assert (status, content_type) == (422, "application/problem+json"), body
        assert body["detail"] == "the config has 2 problem(s): the running config is kept"
        lines = good.splitlines()
        assert body["problems"] == [
            f"{daemon.config_path}:{lines.index('defaults: {interval: 200ms, timeout: 150ms, rise: 1, fall: 4}') + 1}: "
            "defaults.rise: Input should be greater than or equal to 1",
            f"{daemon.config_path}:{lines.index('    active: dorset') + 2}: services.payroll.bogus: unknown key"]
        assert len(config_entries(state)) == entries  # nothing journaled, nothing changed
        assert metric_value(await daemon.metrics_with(VIEWER), "bcd_config_last_reload_successful") == 0
        status, _, service = await daemon.call("GET", "/api/v1/services/payroll", token=VIEWER)
        assert (status, service["status"]) == (200, "ok")

        done = await asyncio.to_thread(daemon.cli, "reload")  # the CLI through the API: the same refusal
        assert done.returncode == 1
        assert done.stderr.splitlines() == [f"bcd: HTTP 422: {body['detail']}", *body["problems"]]
        daemon.config_path.write_text(good.replace("fall: 4", "fall: 5"))
        done = await asyncio.to_thread(daemon.cli, "reload")
        assert (done.returncode, done.stdout) == (0, "config reloaded\n"), done.stderr
        assert config_entries(state)[-1]["by"] == "api: alice"
        assert config_entries(state)[-1]["diff"]["changed"] == {"defaults.fall": [4, 5]}
        code, out = await verify(daemon.config_path)
        assert code == 0, out
