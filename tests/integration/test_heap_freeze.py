"""What the daemon freezes once every probe has run (bcd.heap.freeze_survivors) is never collected again: a cycle
that a failed run leaves, whether the run was over or still in flight at the freeze, would stay for the life of
the process. Real daemon, real probes failing against loopback: refused connects, TLS handshakes that never end."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

import pytest

from bcd import config as config_module
from bcd import heap
from bcd.app import Daemon
from bcd.probes.http_client import _Exchange
from tests.helpers import free_port
from tests.helpers.targets import silent_server

PROBES = 20  # of each kind


def config_file(tmp_path: Path, silent: int) -> Path:
    refused = free_port()  # nothing listens on it
    lines = [f"state_dir: {tmp_path / 'state'}", f"server: {{listen: '127.0.0.1:{free_port()}'}}",
             "sites: {dorset: {}, hampshire: {}}", "defaults: {interval: 1s, timeout: 500ms}", "services:"]
    for index in range(PROBES):
        lines += [f"  svc{index}:", "    active: dorset", "    sites:",
                  f"      dorset: {{probes: [{{name: web, http: {{url: 'http://127.0.0.1:{refused}/'}}}}]}}",
                  f"      hampshire: {{probes: [{{name: web, http: {{url: 'https://127.0.0.1:{silent}/'}}}}]}}"]
    path = tmp_path / "bcd.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_runs_that_fail_around_the_freeze_leave_nothing_it_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight: list[int] = []
    frozen = asyncio.Event()
    async with silent_server() as silent:
        path = config_file(tmp_path, silent)
        daemon = Daemon(str(path), config_module.load(path))

        def freeze_survivors() -> None:  # the real one, and what was in flight when it ran
            in_flight.append(daemon.parts.scheduler.stats.in_flight)
            real()
            frozen.set()

        real = heap.freeze_survivors
        monkeypatch.setattr(heap, "freeze_survivors", freeze_survivors)
        try:
            async with daemon.running():
                async with asyncio.timeout(15):
                    await frozen.wait()
                await asyncio.sleep(1.5)  # the runs in flight at the freeze are over: timeout 0.5 s, then 0.5 s grace
                gc.unfreeze()  # what the freeze kept that is garbage now: found by a full collection
                gc.set_debug(gc.DEBUG_SAVEALL)
                gc.collect()
                gc.set_debug(0)
                kept = sum(isinstance(thing, _Exchange) for thing in gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.unfreeze()  # the test process is not a daemon
    assert in_flight[0] > 0  # https handshakes were waiting at the freeze
    assert kept == 0
