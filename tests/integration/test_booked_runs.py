"""Booked runs against the daemon subprocess: a failover booked with the CLI survives a restart and starts at its
time exactly once; one refused at its time by a guard is journaled, logged with the reason and counted for the
alert rule; bad bookings (a time passed, a time that is no time, an unknown service or plan) are refused with
nothing booked; a booking is listed and cancelled with the CLI."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers.api import CONFIG, VIEWER, Api, api_daemon
from tests.helpers.daemon import metric_value


def local(epoch: float) -> str:
    """The time as an operator types it: this machine's local time, no offset."""
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%dT%H:%M:%S")


async def bookings(daemon: Api) -> list[dict[str, Any]]:
    status, _, body = await daemon.call("GET", "/api/v1/bookings", token=VIEWER)
    assert status == 200, body
    return body["bookings"]  # type: ignore[no-any-return]


async def runs(daemon: Api) -> list[dict[str, Any]]:
    _, _, body = await daemon.call("GET", "/api/v1/runs?service=payroll", token=VIEWER)
    return body["runs"]  # type: ignore[no-any-return]


async def events_of(daemon: Api, kind: str) -> list[dict[str, Any]]:
    _, _, page = await daemon.call("GET", "/api/v1/events?tail=100", token=VIEWER)
    return [event for event in page["events"] if event["kind"] == kind]


async def test_a_booked_failover_survives_a_restart_and_starts_at_its_time_once(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as (daemon, _, _):
        at = float(int(time.time()) + 8)
        booked = await asyncio.to_thread(daemon.cli, "failover", "payroll", "--at", local(at), "--reason",
                                         "planned switchover")
        assert booked.returncode == 0, booked.stderr
        (booking,) = await bookings(daemon)
        assert (booking["kind"], booking["service"], booking["at"], booking["state"], booking["by"]) == (
            "failover", "payroll", at, "booked", "alice")
        assert booked.stdout.startswith(f"booking {booking['id']}: failover of payroll at ")
        assert f"bcd bookings cancel {booking['id']}" in booked.stdout
        listed = await asyncio.to_thread(daemon.cli, "bookings", token=VIEWER)
        assert listed.returncode == 0 and f"{booking['id']}   booked" in listed.stdout, listed
        assert await daemon.stop() == 0
        await daemon.start()
        await daemon.wait_ready(20)
        started = await daemon.wait_log(lambda line: line.get("event") == "booked_run_started", timeout=30)
        assert started["booking"] == booking["id"] and time.time() >= at - 0.01
        (run,) = await daemon.wait_until(lambda: runs(daemon))
        assert (run["kind"], run["trigger"], run["to"]) == ("failover", "alice", "hampshire")
        assert f"booking {booking['id']}: planned switchover" in run["reason"]
        (done,) = await bookings(daemon)
        assert (done["state"], done["run_id"], done["taken_by"]) == ("started", run["id"], socket.gethostname().split(".")[0])
        (journaled,) = await daemon.wait_until(lambda: events_of(daemon, "booked_run_started"))
        assert journaled["run_id"] == run["id"]
        await daemon.wait_log(lambda line: line.get("event") == "run_finished", timeout=20)
        assert len(await runs(daemon)) == 1  # once: its time has passed and it is started


async def test_a_booked_run_refused_at_its_time_is_journaled_logged_and_counted(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as (daemon, _, hampshire):
        at = time.time() + 4
        status, _, booked = await daemon.call("POST", "/api/v1/bookings", body={
            "kind": "failover", "service": "payroll", "at": datetime.fromtimestamp(at).astimezone().isoformat(),
            "reason": "planned switchover"})
        assert status == 201, booked
        number = booked["booking"]["id"]
        hampshire.status = 503  # the standby goes down before its time
        refused = await daemon.wait_log(lambda line: line.get("event") == "booked_run_refused", timeout=30)
        assert (refused["booking"], refused["state"]) == (number, "refused")
        said = f"booking {number} (failover of payroll booked by alice): refused: no standby of payroll is up"
        assert refused["reason"] == said
        assert await runs(daemon) == []
        (journaled,) = await daemon.wait_until(lambda: events_of(daemon, "booked_run_refused"))
        assert journaled["reason"] == said
        metrics = await daemon.metrics_with(VIEWER)
        assert metric_value(metrics, 'bcd_booked_runs_total{kind="failover",result="refused"}') == 1
        assert metric_value(metrics, 'bcd_booked_runs_total{kind="failover",result="started"}') == 0


async def test_bad_bookings_are_refused_with_nothing_booked_and_one_is_cancelled(tmp_path: Path) -> None:
    async with api_daemon(tmp_path) as (daemon, _, _):
        cases = [
            (("failover", "payroll", "--at", local(time.time() - 60)), "has passed"),
            (("failover", "payroll", "--at", "tonight at ten"), "at: expected an ISO 8601 time"),
            (("failback", "nowhere", "--at", local(time.time() + 3600)), "no service named 'nowhere'"),
            (("plan", "run", "evacuate", "--at", local(time.time() + 3600)), "no plan named 'evacuate'"),
            (("failover", "payroll", "--to", "kent", "--at", local(time.time() + 3600)), "payroll has no site 'kent'"),
        ]
        for args, said in cases:
            done = await asyncio.to_thread(daemon.cli, *args, "--reason", "x")
            assert done.returncode == 1 and said in done.stderr, (args, done)
        dry = await asyncio.to_thread(daemon.cli, "failover", "payroll", "--at", local(time.time() + 60), "--dry-run",
                                      "--reason", "x")
        assert dry.returncode == 2 and "a dry run is not booked" in dry.stderr
        assert await bookings(daemon) == []
        assert await events_of(daemon, "run_booked") == []
        status, _, page = await daemon.call("GET", "/", token=VIEWER)
        assert status == 200 and '<p class="empty">No run is booked.</p>' in page
        booked = await asyncio.to_thread(daemon.cli, "failback", "payroll", "--at", local(time.time() + 3600),
                                         "--reason", "back home <after> the works")
        assert booked.returncode == 0, booked.stderr
        (booking,) = await bookings(daemon)
        status, _, page = await daemon.call("GET", "/", token=VIEWER)  # the status page lists it, escaped
        row = re.search(rf'<tr data-booking="{booking["id"]}">.*?</tr>', page)
        assert status == 200 and row is not None, page
        assert re.fullmatch(rf'<tr data-booking="{booking["id"]}"><td>{booking["id"]}</td><td>failback of payroll'
                            r'</td><td><time datetime="[^"]+">\d{4}-\d\d-\d\d \d\d:\d\d UTC</time></td>'
                            r"<td>alice</td><td>back home &lt;after&gt; the works</td></tr>", row.group(0)), row.group(0)
        viewer = await asyncio.to_thread(daemon.cli, "bookings", "cancel", booking["id"], token=VIEWER)
        assert viewer.returncode == 1 and "grafana" in viewer.stderr, viewer
        cancelled = await asyncio.to_thread(daemon.cli, "bookings", "cancel", booking["id"], "--reason", "not now")
        assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"booking {booking['id']} (failback"), cancelled
        (gone,) = await bookings(daemon)
        assert (gone["state"], gone["detail"]) == ("cancelled", "cancelled by alice: not now")
        status, _, page = await daemon.call("GET", "/", token=VIEWER)
        assert 'data-booking=' not in page and '<p class="empty">No run is booked.</p>' in page
        status, _, problem = await daemon.call("POST", f"/api/v1/bookings/{booking['id']}/cancel", body={})
        assert status == 409 and problem["detail"].endswith(
            "only a booking to come, or a maintenance window in progress, can be cancelled")
        status, _, problem = await daemon.call("GET", "/api/v1/bookings/nope", token=VIEWER)
        assert status == 404


async def test_a_time_passed_while_the_daemon_was_down_is_missed_beyond_the_grace(tmp_path: Path) -> None:
    config = CONFIG + "bookings: {{grace: 1s}}\n"
    async with api_daemon(tmp_path, config) as (daemon, _, _):
        at = time.time() + 2
        late = datetime.fromtimestamp(at).astimezone().isoformat()
        status, _, booked = await daemon.call("POST", "/api/v1/bookings", body={
            "kind": "failover", "service": "payroll", "at": late, "reason": "planned switchover"})
        assert status == 201, booked
        assert await daemon.stop() == 0
        await asyncio.sleep(max(0.0, at + 2 - time.time()))  # down past its time and the grace (what is tested)
        await daemon.start()
        missed = await daemon.wait_log(lambda line: line.get("event") == "booked_run_refused", timeout=30)
        assert missed["state"] == "missed" and "while no bcd ran it (grace 1s)" in missed["reason"], missed
        (booking,) = await bookings(daemon)
        assert booking["state"] == "missed" and booking["detail"].startswith("missed: its time "), booking
        assert await runs(daemon) == []
        metrics = await daemon.metrics_with(VIEWER)
        assert metric_value(metrics, 'bcd_booked_runs_total{kind="failover",result="missed"}') == 1
