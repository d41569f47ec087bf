"""bcd.app's root: a SIGHUP that comes while the parts are still starting reloads once they all run."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from structlog.testing import capture_logs

from bcd import config as config_module
from bcd.app import Daemon
from tests.helpers.daemon import free_port


async def test_a_sighup_during_the_start_reloads_once_every_part_runs(tmp_path: Path) -> None:
    path = tmp_path / "bcd.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nserver: {{listen: '127.0.0.1:{free_port()}'}}\n"
                    "sites: {dorset: {}}\n")
    daemon = Daemon(str(path), config_module.load(path))
    with capture_logs() as logs:
        running = asyncio.create_task(daemon.run())
        await asyncio.sleep(0)  # run() has set its signal handlers and the start has begun (it waits for a part)
        assert daemon.parts is None
        os.kill(os.getpid(), signal.SIGHUP)
        async with asyncio.timeout(10):
            while not any(line["event"] in ("reloaded", "config_reload_failed") for line in logs):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the log is what there is to watch (under a deadline)
        daemon.stop()
        assert await running == 0
    events = [line["event"] for line in logs if line["event"] in ("started", "reloaded", "config_reload_failed")]
    assert events == ["started", "reloaded"]
    assert daemon.metrics.reload.successful
