"""bcd.app's root: a SIGHUP that comes while the parts are still starting reloads once they all run; a part
that fails stops the daemon, which raises that error and unlocks its state_dir."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import NoReturn

import pytest
from structlog.testing import capture_logs

from bcd import config as config_module
from bcd.app import Daemon
from bcd.bus import Subscription
from bcd.outputs.alerts.sender import AlertSender
from tests.helpers.daemon import free_port


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "bcd.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nserver: {{listen: '127.0.0.1:{free_port()}'}}\n"
                    "sites: {dorset: {}}\n")
    return path


async def test_a_sighup_during_the_start_reloads_once_every_part_runs(tmp_path: Path) -> None:
    path = config_file(tmp_path)
    daemon = Daemon(str(path), config_module.load(path))
    with capture_logs() as logs:
        running = asyncio.create_task(daemon.run())
        await asyncio.sleep(0)  # run() has set its signal handlers and the start has begun (it waits for a part)
        assert daemon.ready() == (False, "starting")  # its parts are made, not yet all running
        os.kill(os.getpid(), signal.SIGHUP)
        async with asyncio.timeout(10):
            while not any(line["event"] in ("reloaded", "config_reload_failed") for line in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the log is what there is to watch (under a deadline)
        daemon.stop()
        assert await running == 0
    events = [line["event"] for line in logs if line["event"] in ("started", "reloaded", "config_reload_failed")]
    assert events == ["started", "reloaded"]
    assert daemon.metrics.reload.successful


async def test_a_part_that_fails_stops_the_daemon_which_raises_its_error_and_unlocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def a_bug(self: AlertSender, subscription: Subscription) -> NoReturn:  # a fake: no input makes it fail
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(AlertSender, "_listen", a_bug)
    path = config_file(tmp_path)
    with capture_logs() as logs, pytest.raises(RuntimeError, match="something nobody foresaw"):
        await Daemon(str(path), config_module.load(path)).run()  # raised as itself, not in an exception group
    assert logs[-1]["event"] == "stopped"
    again = Daemon(str(path), config_module.load(path))  # the state_dir lock was released
    again.journal.close()
    again.state_lock.release()
