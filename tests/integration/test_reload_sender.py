"""Who reloaded the daemon (a subprocess on real files), as its journal keeps it: a SIGHUP names its sender's
pid, name and uid (this test process); `POST /api/v1/reload` and `bcd reload` name the token; a broken config
sent through the API is refused with its `FILE:LINE` problems and changes nothing; the journal still verifies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.helpers.api import Api, api_daemon

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
        by = f"SIGHUP from pid {os.getpid()} ({OWN_NAME}, uid {os.getuid()})"
        line = await daemon.wait_log(lambda e: e.get("event") == "config_load_journaled" and e.get("by") != "start")
        assert line["by"] == by
        entry = config_entries(tmp_path / "state")[-1]
        assert entry["by"] == by
        assert entry["diff"]["changed"] == {"defaults.fall": [2, 3]}
        code, out = await verify(daemon.config_path)
        assert code == 0, out
