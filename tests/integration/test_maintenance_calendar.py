"""The maintenance calendar against the daemon subprocess: a config window and a booked one start and end on
time (awaited on the daemon's log and events, not slept on), a booking that would leave no site is refused
(unless forced), bad bookings are clear 400/409s, and the windows are listed (API, CLI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.api import CONFIG, VIEWER, Api, api_daemon


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
async def calendar_api(tmp_path: Path) -> AsyncIterator[tuple[Api, float]]:
    start = float(int(time.time()) + 5)  # whole seconds, as in the file; the daemon starts within that (a window already started would be as good a test)
    window = (f'maintenance:\n  night: {{sites: [hampshire], services: all, from: "{iso(start)}", for: 2s, '
              f'reason: "patch night"}}\n')
    async with api_daemon(tmp_path, CONFIG + window.replace("{", "{{").replace("}", "}}")) as (daemon, _, _):
        yield daemon, start


def maintenance_of(daemon: Api, site: str, to: str) -> Any:
    return lambda e: (e.get("event") == "site_transition" and e.get("site") == site
                      and (e.get("to_state") == "maintenance") == (to == "maintenance"))


async def test_a_config_window_starts_and_ends_on_time(calendar_api: tuple[Api, float]) -> None:
    daemon, start = calendar_api
    status, _, listed = await daemon.call("GET", "/api/v1/maintenance", token=VIEWER)
    assert status == 200
    (night,) = listed["windows"]
    assert (night["name"], night["sites"], night["services"], night["source"]) == (
        "night", ["hampshire"], ["payroll"], "config")
    assert night["start"] == pytest.approx(start, abs=1) and night["end"] - night["start"] == 2
    status, _, page = await daemon.call("GET", "/", token=VIEWER)  # the status page lists it too
    assert status == 200 and '<tr data-window="night"><td>night</td>' in page and "patch night (config)" in page
    began = await daemon.wait_log(maintenance_of(daemon, "hampshire", "maintenance"), timeout=20)
    assert began["reason"].endswith("calendar: window night: patch night")
    assert time.time() >= start - 0.01
    ended = await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("site") == "hampshire"
                                  and e.get("from_state") == "maintenance", timeout=20)
    assert ended["reason"] == "maintenance ended (expired)" and time.time() >= start + 2 - 0.01
    status, _, listed = await daemon.call("GET", "/api/v1/maintenance", token=VIEWER)
    assert listed["windows"] == []


async def test_a_booked_window_starts_on_time_and_one_leaving_no_site_is_refused(
        calendar_api: tuple[Api, float]) -> None:
    daemon, config_start = calendar_api
    start = config_start + 4  # after the config window (2s): overlapping it, payroll would have no site
    status, _, booked = await daemon.call("POST", "/api/v1/services/payroll/maintenance", body={
        "site": "dorset", "from": iso(start) + "Z", "duration": "1h", "reason": "new switch"})
    assert status == 201, booked
    assert booked["sites"] == ["dorset"] and "booked as payroll.dorset@" in booked["detail"]
    # hampshire too while dorset's window runs: payroll would have no site outside maintenance
    status, _, refused = await daemon.call("POST", "/api/v1/services/payroll/maintenance", body={
        "site": "hampshire", "from": iso(start + 60), "duration": "10m", "reason": "both"})
    assert status == 409
    assert refused["detail"].startswith("payroll would have no site outside maintenance: dorset (window payroll.dorset@")
    assert "hampshire (window" in refused["detail"] and refused["detail"].endswith("force it if that is meant")
    status, _, listed = await daemon.call("GET", "/api/v1/maintenance", token=VIEWER)
    assert [window["name"] for window in listed["windows"]] == ["night", booked["detail"].rsplit(" ", 1)[1]]
    async def booking() -> Any:  # journaled (the journal commits in groups, within 50 ms)
        _, _, page = await daemon.call("GET", "/api/v1/events?tail=50", token=VIEWER)
        return next((e for e in page["events"] if e["kind"] == "maintenance_booked"), None)

    booked_event = await daemon.wait_until(booking)
    assert (booked_event["service"], booked_event["reason"], booked_event["sites"], booked_event["by"]) == (
        "payroll", "alice: new switch", ["dorset"], "alice")
    began = await daemon.wait_log(maintenance_of(daemon, "dorset", "maintenance"), timeout=20)
    assert "alice: window payroll.dorset@" in began["reason"] and began["reason"].endswith(": new switch")
    assert time.time() >= start - 0.01
    forced = await asyncio.to_thread(daemon.cli, "maintenance", "payroll", "--from", iso(time.time() + 3600) + "+00:00",
                                     "--for", "10m", "--reason", "everything", "--force")
    assert forced.returncode == 0 and "payroll: dorset, hampshire in maintenance until" in forced.stdout, forced
    cli = await asyncio.to_thread(daemon.cli, "maintenance", "list", token=VIEWER)
    assert cli.returncode == 0, cli.stderr
    assert "everything" in cli.stdout and "new switch" in cli.stdout


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"from": "2020-01-01T00:00:00Z", "duration": "1h", "reason": "x"}, 409, "the window must start in the future"),
    ({"from": "tomorrow", "duration": "1h", "reason": "x"}, 400, "from: expected an ISO 8601 time"),
    ({"site": "nowhere", "from": "2099-01-01T00:00:00Z", "duration": "1h", "reason": "x"}, 404,
     "payroll has no site 'nowhere'"),
    ({"from": "2099-01-01T00:00:00Z", "duration": "1h", "reason": "x"}, 409,
     "payroll would have no site outside maintenance: dorset (window payroll@20990101T000000Z), hampshire"),
])
async def test_bad_bookings_are_refused_and_nothing_is_booked(
        calendar_api: tuple[Api, float], body: dict[str, Any], status: int, detail: str) -> None:
    daemon, _ = calendar_api
    got, _, problem = await daemon.call("POST", "/api/v1/services/payroll/maintenance", body=body)
    assert (got, problem["detail"][:len(detail)]) == (status, detail)
    _, _, listed = await daemon.call("GET", "/api/v1/maintenance", token=VIEWER)
    assert [window["name"] for window in listed["windows"]] == ["night"]





async def test_a_booked_window_survives_a_restart_and_starts_after_it(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as (daemon, _, _):  # no config window: a one-off one would end meanwhile
        start = float(int(time.time()) + 6)
        status, _, booked = await daemon.call("POST", "/api/v1/services/payroll/maintenance", body={
            "site": "dorset", "from": iso(start) + "Z", "duration": "1h", "reason": "new switch"})
        assert status == 201, booked
        name = booked["detail"].rsplit(" ", 1)[1]
        assert await daemon.stop() == 0
        await daemon.start()
        await daemon.wait_ready(20)
        _, _, listed = await daemon.call("GET", "/api/v1/maintenance", token=VIEWER)
        (window,) = listed["windows"]
        assert (window["name"], window["source"], window["sites"], window["start"], window["by"]) == (
            name, "booked", ["dorset"], start, "alice")
        assert window["booking"] is not None
        began = await daemon.wait_log(maintenance_of(daemon, "dorset", "maintenance"), timeout=20)
        assert f"alice: window {name}: new switch" in began["reason"] and time.time() >= start - 0.01
