"""The daemon as a subprocess: readiness, metrics through promtool, transitions, reload, stop, restart."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import (
    DaemonProcess,
    Daemons,
    free_port,
    metric_value,
    site_is,
    site_state,
    status_is,
)
from tests.helpers.targets import HttpTarget, two_sites

CONFIG = """
instance: test-bcd
vantage: dorset
state_dir: {state_dir}
server: {{listen: "127.0.0.1:{port}"}}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}
services:
  payroll:
    active: dorset
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "{dorset}"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "{hampshire}"}}}}]}}
{extra}
"""

EXTRA_SERVICE = """
  library:
    active: hampshire
    sites:
      dorset: {probes: [{name: opac, tcp: {host: 127.0.0.1, port: 9}}]}
      hampshire: {probes: [{name: opac, http: {url: "%s"}}]}
"""


class Estate:
    def __init__(self, tmp_path: Path, dorset: HttpTarget, hampshire: HttpTarget) -> None:
        self.tmp_path = tmp_path
        self.dorset = dorset
        self.hampshire = hampshire
        self.port = free_port()
        self.config_path = tmp_path / "bcd.yaml"
        self.state_dir = tmp_path / "state"

    def write_config(self, extra: str = "", raw: str | None = None) -> None:
        text = raw if raw is not None else CONFIG.format(
            state_dir=self.state_dir, port=self.port, dorset=self.dorset.url, hampshire=self.hampshire.url,
            extra=extra,
        )
        self.config_path.write_text(text)

    def daemon(self) -> DaemonProcess:
        return DaemonProcess(self.config_path, self.port)


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with two_sites() as (dorset, hampshire):
        estate = Estate(tmp_path, dorset, hampshire)
        estate.write_config()
        yield estate


@pytest.fixture
async def daemon(estate: Estate, daemons: Daemons) -> DaemonProcess:
    process = await daemons.start(estate.daemon())
    await process.wait_until(lambda: status_is(process, "payroll", "ok"))
    return process


async def test_ready_after_every_probe_ran_then_sites_rise_to_up(daemon: DaemonProcess) -> None:
    data = await daemon.get_json("/api/v1/services/payroll")
    assert all(site["probes"] for site in data["sites"].values())  # ready: every probe has an observation
    await daemon.wait_until(lambda: site_is(daemon, "payroll", "dorset", "up"))
    await daemon.wait_until(lambda: site_is(daemon, "payroll", "hampshire", "up"))
    data = await daemon.get_json("/api/v1/services/payroll")
    assert data["status"] == "ok"
    assert data["active"] == "dorset"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
async def test_metrics_pass_promtool(daemon: DaemonProcess) -> None:
    text = await daemon.metrics()
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert metric_value(text, 'bcd_site_up{service="payroll",site="dorset"}') == 1
    assert metric_value(text, 'bcd_service_status{service="payroll",status="ok"}') == 1
    assert metric_value(text, 'bcd_probe_success{service="payroll",site="dorset",probe="health"}') == 1
    assert metric_value(text, "bcd_config_last_reload_successful") == 1
    assert 'bcd_build_info{version="' in text


async def test_site_failure_is_a_logged_transition_with_reason(estate: Estate, daemon: DaemonProcess) -> None:
    estate.dorset.status = 503
    line = await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("to_state") == "down")
    assert line["service"] == "payroll" and line["site"] == "dorset"
    assert line["reason"].startswith("2 consecutive failures of health")
    assert "503" in line["reason"]
    status = await daemon.wait_log(lambda e: e.get("event") == "service_status" and e.get("to_status") == "failover_needed")
    assert "hampshire" in status["reason"]
    metrics = await daemon.metrics()
    assert metric_value(metrics, 'bcd_site_health{service="payroll",site="dorset",state="down"}') == 1
    assert metric_value(metrics, 'bcd_health_transitions_total{service="payroll",site="dorset",from="degraded",to="down"}') == 1


async def test_invalid_reload_keeps_old_config(estate: Estate, daemon: DaemonProcess) -> None:
    estate.write_config(raw="sites: {dorset: {}}\nservices:\n  payroll: {active: nowhere, bogus: 1}\n")
    daemon.send(signal.SIGHUP)
    line = await daemon.wait_log(lambda e: e.get("event") == "config_reload_failed")
    assert any(f"{estate.config_path}:3: services.payroll.bogus: unknown key" in err for err in line["errors"])
    assert metric_value(await daemon.metrics(), "bcd_config_last_reload_successful") == 0
    before = estate.dorset.requests
    await daemon.wait_until(lambda: _async_true(estate.dorset.requests > before + 2))
    assert await site_state(daemon, "payroll", "dorset") == "up"


async def test_reload_adds_and_removes_services_in_metrics(estate: Estate, daemon: DaemonProcess) -> None:
    estate.write_config(extra=EXTRA_SERVICE % estate.hampshire.url)
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda e: e.get("event") == "reloaded")
    await daemon.wait_until(lambda: _metric_present(daemon, 'bcd_probe_success{service="library",site="hampshire",probe="opac"}'))
    status, _ = await daemon.get("/api/v1/services/library")
    assert status == 200
    estate.write_config()
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda e: e.get("event") == "reloaded" and e.get("services") == 1)
    metrics = await daemon.metrics()
    assert 'service="library"' not in metrics
    assert metric_value(metrics, "bcd_config_last_reload_successful") == 1


BACKUPS = """
  backups:
    active: dorset
    sites:
      dorset: {probes: [{name: last-run, command: {argv: ["/bin/echo", "BACKUP OK | age=180s;3600;7200;0; size=2MB 'free space'=42%;80;90 load=U"]}}]}
"""


async def test_perfdata_on_the_api_and_as_gauges_gone_with_its_probe(estate: Estate, daemon: DaemonProcess) -> None:
    series = 'bcd_probe_perfdata{service="backups",site="dorset",probe="last-run",label="%s"}'
    estate.write_config(extra=BACKUPS)
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda e: e.get("event") == "reloaded" and e.get("services") == 2)
    await daemon.wait_until(lambda: _metric_present(daemon, series % "age"))
    metrics = await daemon.metrics()
    assert [metric_value(metrics, series % label) for label in ("age", "size", "free space", "load")] == [
        180, 2 * 1024**2, 0.42, None]  # seconds, bytes, a ratio; U is no sample
    if shutil.which("promtool") is not None:
        check = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True,
                               check=False)
        assert check.returncode == 0, check.stdout + check.stderr
    entry = (await daemon.get_json("/api/v1/services/backups"))["sites"]["dorset"]["probes"]["last-run"]
    assert entry["reason"] == "BACKUP OK"
    assert entry["perfdata"][:2] == [
        {"label": "age", "value": 180, "unit": "s", "warn": "3600", "crit": "7200", "min": 0, "max": None},
        {"label": "size", "value": 2, "unit": "MB", "warn": None, "crit": None, "min": None, "max": None},
    ]
    assert [item["label"] for item in entry["perfdata"]] == ["age", "size", "free space", "load"]
    http = (await daemon.get_json("/api/v1/services/payroll"))["sites"]["dorset"]["probes"]["health"]
    assert "perfdata" not in http  # probes that report none keep their entry as it was
    estate.write_config()
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda e: e.get("event") == "reloaded" and e.get("services") == 1)
    assert "bcd_probe_perfdata{" not in await daemon.metrics()


async def test_unchanged_probes_keep_state_across_reload(estate: Estate, daemon: DaemonProcess) -> None:
    estate.dorset.status = 500
    await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("to_state") == "down")
    estate.write_config(extra=EXTRA_SERVICE % estate.hampshire.url)
    daemon.send(signal.SIGHUP)
    await daemon.wait_log(lambda e: e.get("event") == "reloaded")
    assert await site_state(daemon, "payroll", "dorset") == "down"


async def test_sigterm_stops_within_five_seconds_with_exit_zero(daemon: DaemonProcess) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    code = await daemon.stop(signal.SIGTERM)
    assert code == 0
    assert loop.time() - began < 5.0


async def test_restart_remembers_down_site_and_does_not_reannounce(
    estate: Estate, daemon: DaemonProcess, daemons: Daemons
) -> None:
    estate.dorset.status = 503
    await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("to_state") == "down")
    assert await daemon.stop() == 0
    journal = estate.state_dir / "bcd.sqlite"
    count_before = _count_events(journal)

    again = await daemons.start(estate.daemon(), ready=False)
    await again.wait_until(lambda: _api_up(again))
    assert await site_state(again, "payroll", "dorset") == "down"  # known before any probe ran again
    await again.wait_ready()
    requests = estate.dorset.requests
    await again.wait_until(lambda: _async_true(estate.dorset.requests >= requests + 3))
    assert await site_state(again, "payroll", "dorset") == "down"
    assert _count_events(journal) == count_before
    assert not [e for e in again.log_lines if e.get("event") in ("site_transition", "service_status")]


def _count_events(path: Path) -> int:
    with sqlite3.connect(path) as db:
        count: int = db.execute("SELECT count(*) FROM events").fetchone()[0]
        return count


async def _async_true(value: bool) -> bool:
    return value


async def _api_up(daemon: DaemonProcess) -> bool:
    status, _ = await daemon.get("/healthz")
    return status == 200


async def _metric_present(daemon: DaemonProcess, sample: str) -> bool:
    return metric_value(await daemon.metrics(), sample) is not None


BAD_CA = """
  library:
    active: hampshire
    sites:
      hampshire: {probes: [{name: opac, http: {url: "https://127.0.0.1:1/", ca_file: "%s"}}]}
"""


async def test_reload_with_a_tls_file_that_cannot_be_loaded_is_refused(
    estate: Estate, daemon: DaemonProcess, tmp_path: Path
) -> None:
    broken = tmp_path / "not-a-ca.pem"
    broken.write_text("this is not PEM\n")
    estate.write_config(extra=BAD_CA % broken)
    daemon.send(signal.SIGHUP)
    line = await daemon.wait_log(lambda e: e.get("event") == "config_reload_failed")
    assert any("services.library.sites.hampshire.probes.opac.http: cannot load ca_file" in err for err in line["errors"])
    assert metric_value(await daemon.metrics(), "bcd_config_last_reload_successful") == 0
    status, _ = await daemon.get("/api/v1/services/library")
    assert status == 404  # the old config keeps running


async def test_start_with_a_tls_file_that_cannot_be_loaded_exits_2(estate: Estate, tmp_path: Path) -> None:
    broken = tmp_path / "not-a-ca.pem"
    broken.write_text("this is not PEM\n")
    estate.write_config(extra=BAD_CA % broken)
    process = estate.daemon()
    await process.start()
    assert await process.exit_code(15) == 2
    text = " ".join(str(line.get("line", "")) for line in process.log_lines)
    assert f"{estate.config_path}:" in text and "probes.opac.http: cannot load ca_file" in text
    assert "Traceback" not in text


# -------------------------------------------------------------------------------------------------------------
# Hostile reloads: every failure is a config_reload_failed with the metric at 0, memory stays bounded, and
# SIGTERM never waits for a reload

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"
HOSTILE = [
    "invalid-recursive-alias.yaml",
    "invalid-deep-nesting.yaml",
    "invalid-alias-bomb.yaml",
    "invalid-duplicate-keys.yaml",
    "invalid-name-control-characters.yaml",
]
RSS_GROWTH_MB = 100


def vm_rss_mb(daemon: DaemonProcess) -> float:
    assert daemon.proc is not None
    for line in Path(f"/proc/{daemon.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def reload_and_wait(daemon: DaemonProcess, event: str) -> dict[str, Any]:
    """SIGHUP, then the first `event` log line after it."""
    mark = len(daemon.log_lines)
    newer: Callable[[dict[str, Any]], bool] = lambda line: any(line is seen for seen in daemon.log_lines[mark:])  # noqa: E731
    daemon.send(signal.SIGHUP)
    return await daemon.wait_log(lambda line: line.get("event") == event and newer(line), timeout=60)


def expected_errors(fixture: Path, config_path: Path) -> list[str]:
    lines = fixture.read_bytes().decode().splitlines()
    return [f"{config_path}{line.removeprefix('# expect: ' + fixture.name)}" for line in lines
            if line.startswith("# expect: ")]


async def test_every_hostile_reload_is_reported_and_the_daemon_carries_on(estate: Estate, daemon: DaemonProcess) -> None:
    rss_before = vm_rss_mb(daemon)
    huge = estate.tmp_path / "huge.yaml"
    with huge.open("w") as out:  # over the 32 MB limit
        out.write("sites: {dorset: {}}\n")
        for _ in range(33):
            out.write("#" * (1024 * 1024 - 1) + "\n")
    for name in [*HOSTILE, huge.name]:
        estate.write_config()
        await reload_and_wait(daemon, "reloaded")
        assert metric_value(await daemon.metrics(), "bcd_config_last_reload_successful") == 1
        if name == huge.name:
            huge.replace(estate.config_path)
            expected = [f"{estate.config_path}:1: the file is larger than the limit of 32 MB"]
        else:
            estate.config_path.write_bytes((CONFIGS / name).read_bytes())
            expected = expected_errors(CONFIGS / name, estate.config_path)
        failed = await reload_and_wait(daemon, "config_reload_failed")
        assert len(failed["errors"]) == len(expected), (name, failed)
        for error, start in zip(failed["errors"], expected, strict=True):
            assert error.startswith(start), (name, error)
        assert metric_value(await daemon.metrics(), "bcd_config_last_reload_successful") == 0
        assert vm_rss_mb(daemon) < rss_before + RSS_GROWTH_MB, name
    assert not [line for line in daemon.log_lines if line.get("event") == "raw" and "Traceback" in line["line"]]
    before = estate.dorset.requests
    await daemon.wait_until(lambda: _async_true(estate.dorset.requests > before + 2))
    assert await site_state(daemon, "payroll", "dorset") == "up"
    assert (await daemon.get("/readyz"))[0] == 200


async def test_sigterm_during_a_long_reload_exits_within_five_seconds(estate: Estate, daemon: DaemonProcess) -> None:
    # 250,000 services with an unknown key each (26 MB): reading and validating it takes far longer than 5 s
    estate.config_path.write_text("sites: {dorset: {}}\nservices:\n" + "".join(
        f"  s{i}: {{active: dorset, bogus: 1, sites: {{dorset: {{probes: [{{name: p, tcp: {{host: h, port: 1}}}}]}}}}}}\n"
        for i in range(250_000)))
    await reload_and_wait(daemon, "reloading")
    assert daemon.proc is not None
    began = time.monotonic()
    code = await daemon.stop(signal.SIGTERM)
    elapsed = time.monotonic() - began
    assert code == 0
    assert elapsed < 5.0
    finished = [line for line in daemon.log_lines if line.get("event") in ("reloaded", "config_reload_failed")]
    assert finished == []  # the reload was still running: the exit did not wait for it
