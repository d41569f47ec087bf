"""Detection in seconds, with the real daemon and real HTTP targets on loopback: a target killed mid-interval is
declared down about (fall - 1) x fast_interval after its first failed probe, then probed on its normal
spacing again; a site of 20 services killed at once is down everywhere within 3 s (a correlated re-probe of the
whole site, then fast confirmation)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import DaemonProcess, free_port
from tests.helpers.targets import HttpTarget


def stamp(line: dict[str, Any]) -> float:
    """A log line's time (ISO, UTC) as a Unix time."""
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


def config(tmp_path: Path, port: int, services: dict[str, tuple[str, str]], timing: str, scheduler: str = "") -> Path:
    lines = [f"instance: fast\nstate_dir: {tmp_path / 'state'}\nserver: {{listen: '127.0.0.1:{port}'}}\n"
             f"sites: {{dorset: {{}}, hampshire: {{}}}}\ndefaults: {timing}\n{scheduler}services:\n"]
    for name, (dorset, hampshire) in services.items():
        lines.append(f"  {name}:\n    active: dorset\n    sites:\n"
                     f"      dorset: {{probes: [{{name: health, http: {{url: '{dorset}'}}}}]}}\n"
                     f"      hampshire: {{probes: [{{name: health, http: {{url: '{hampshire}'}}}}]}}\n")
    path = tmp_path / "bcd.yaml"
    path.write_text("".join(lines))
    return path


@pytest.fixture
async def targets() -> AsyncIterator[list[HttpTarget]]:
    started: list[HttpTarget] = []
    yield started
    for target in started:
        await target.stop()


async def running(path: Path, port: int) -> DaemonProcess:
    daemon = DaemonProcess(path, port)
    await daemon.start()
    await daemon.wait_ready(30.0)
    return daemon


async def test_a_target_killed_mid_interval_is_down_after_fall_fast_confirmations(
    tmp_path: Path, targets: list[HttpTarget]
) -> None:
    dorset, hampshire = await HttpTarget().start(), await HttpTarget().start()
    targets.extend([hampshire])
    port = free_port()
    path = config(tmp_path, port, {"payroll": (dorset.url, hampshire.url)},
                  "{interval: 4s, timeout: 300ms, rise: 1, fall: 3, fast_interval: 500ms}")
    daemon = await running(path, port)
    try:
        await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("to_state") == "up"
                              and e.get("site") == "dorset", 30.0)
        await asyncio.sleep(1.3)  # somewhere inside the 4 s interval
        await dorset.stop()  # killed: connection refused from now on
        first = await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("to_state") == "degraded")
        down = await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("to_state") == "down")
        # two fast confirmations after the first failure (interval 4 s: without them, 8 s)
        assert 1.0 - 0.05 <= stamp(down) - stamp(first) <= 1.0 + 0.6
        assert down["reason"].startswith("3 consecutive failures of health: ")
        assert down["reason"].endswith(" (fast confirmation every 0.5s)")
        await asyncio.sleep(2.5)  # a span with no event to await: down is confirmed, no more early runs in it
        metrics = await daemon.metrics()
        assert "bcd_scheduler_fast_runs_total 2.0" in metrics
    finally:
        await daemon.stop()


async def test_a_site_of_20_services_killed_at_once_is_down_within_3_seconds(
    tmp_path: Path, targets: list[HttpTarget]
) -> None:
    dorsets = [await HttpTarget().start() for _ in range(20)]
    hampshire = await HttpTarget().start()
    targets.append(hampshire)
    port = free_port()
    services = {f"svc{i:02}": (target.url, hampshire.url) for i, target in enumerate(dorsets)}
    path = config(tmp_path, port, services, "{interval: 5s, timeout: 500ms, rise: 1, fall: 3}")
    daemon = await running(path, port)
    try:
        await daemon.wait_until(lambda: all_up(daemon, len(services)), 30.0)
        await asyncio.sleep(0.7)  # the kill lands inside the 5 s interval, not at a probe: the worst case is timed
        killed = time.time()
        await asyncio.gather(*(target.stop() for target in dorsets))
        downs = []
        for name in services:
            line = await daemon.wait_log(lambda e, name=name: e.get("event") == "site_transition"  # type: ignore[misc]
                                         and e.get("service") == name and e.get("to_state") == "down", 10.0)
            downs.append(stamp(line) - killed)
        assert max(downs) <= 3.0, sorted(downs)
        burst = await daemon.wait_log(lambda e: e.get("event") == "site_reprobe")
        assert burst["site"] == "dorset" and burst["probes"] == 20
        assert burst["reason"].startswith("2 services failed at dorset within 2s")
        metrics = await daemon.metrics()
        assert 'bcd_scheduler_bursts_total{site="dorset"} 1.0' in metrics
    finally:
        await daemon.stop()


async def all_up(daemon: DaemonProcess, count: int) -> bool:
    data = await daemon.get_json("/api/v1/services")
    services = data["services"] if isinstance(data, dict) else data
    return len(services) == count and all(service["status"] == "ok" for service in services)
