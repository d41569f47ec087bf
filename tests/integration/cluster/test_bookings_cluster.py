"""Bookings in a cluster (real etcd): a maintenance window booked through one instance is listed by every
instance and, at its start, applied by each to its own view (status, alerts, automation), so none takes
automatic action while it lasts."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.integration.cluster.kit import OPERATOR_TOKEN, ClusterEstate, Member


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S")


async def windows(member: Member) -> list[dict[str, Any]]:
    reply = await member.call("GET", "/api/v1/maintenance")
    assert reply.status == 200, reply
    return reply.body["windows"]  # type: ignore[no-any-return]


def status_table(member: Member) -> str:
    env = {"BCD_URL": member.url, "BCD_TOKEN": OPERATOR_TOKEN, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "bcd", "status"], capture_output=True, text=True, env=env,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_a_window_booked_on_one_instance_is_applied_by_every_instance(estate: ClusterEstate) -> None:
    dorset, hampshire = await estate.start(estate.config(), "dorset", "hampshire")
    start = float(int(time.time()) + 3)
    booked = await dorset.call("POST", "/api/v1/services/payroll/maintenance", json_body={
        "site": "dorset", "from": iso(start), "duration": "1h", "reason": "patch night"})
    assert booked.status == 201, booked
    name = booked.body["detail"].rsplit(" ", 1)[1]
    listed = await hampshire.poll(lambda: windows(hampshire), bool, "the window, on hampshire's instance")
    assert [(w["name"], w["source"], w["sites"], w["start"], w["by"]) for w in listed] == [
        (name, "booked", ["dorset"], start, "olive")]
    assert await windows(dorset) == listed
    for member in (dorset, hampshire):  # each applies it to its own view at its start
        service = await member.wait_service(lambda s: s["sites"]["dorset"]["state"] == "maintenance")
        assert service["sites"]["dorset"]["maintenance_until"] == pytest.approx(start + 3600, abs=1)
        assert time.time() >= start - 0.01
    began = await hampshire.wait_log(lambda line: line.get("event") == "site_transition"
                                     and line.get("to_state") == "maintenance")
    assert began["reason"].endswith(f"olive: window {name}: patch night"), began
    table = await asyncio.to_thread(status_table, hampshire)  # the dorset column: hampshire's own view, in maintenance
    assert re.search(r"^payroll\s+\S+\s+dorset\s+-\s+maintenance \(", table, re.MULTILINE), table
    # dorset fails for everyone: no instance acts while its window lasts
    estate.dorset.status = 503
    await estate.dorset_probed([dorset, hampshire], 6)
    await asyncio.sleep(0)
    for member in (dorset, hampshire):
        service = await member.service()
        assert service["active"] == "dorset" and service["sites"]["dorset"]["state"] == "maintenance", service
        assert await member.runs() == []
    assert estate.steps.requests == []


async def bookings(member: Member) -> list[dict[str, Any]]:
    reply = await member.call("GET", "/api/v1/bookings")
    assert reply.status == 200, reply
    return reply.body["bookings"]  # type: ignore[no-any-return]


async def test_a_booked_failover_is_started_by_exactly_one_instance(estate: ClusterEstate) -> None:
    dorset, hampshire = await estate.start(estate.config(mode="manual"), "dorset", "hampshire")
    at = float(int(time.time()) + 3)
    booked = await hampshire.call("POST", "/api/v1/bookings", json_body={
        "kind": "failover", "service": "payroll", "at": iso(at), "reason": "planned switchover"})
    assert booked.status == 201, booked
    number = booked.body["booking"]["id"]
    seen = await dorset.poll(lambda: bookings(dorset), bool, "the booking, on dorset's instance")
    assert [(b["id"], b["state"], b["at"]) for b in seen] == [(number, "booked", at)]
    started = await dorset.poll(lambda: bookings(dorset), lambda found: found[0]["state"] == "started",
                                "the booking started")
    (booking,) = started
    assert booking["taken_by"] in ("dorset", "hampshire") and booking["run_id"] is not None
    starter = dorset if booking["taken_by"] == "dorset" else hampshire
    other = hampshire if starter is dorset else dorset
    run = await starter.wait_run(booking["run_id"])
    assert run["result"] == "succeeded" and f"booking {number}: planned switchover" in run["reason"]
    assert time.time() >= at - 0.01
    await other.wait_service(lambda s: s["active"] == "hampshire")
    await estate.dorset_probed([dorset, hampshire], 4)  # time passes: nobody starts it again
    assert len(estate.steps.to("/switch")) == 1
    assert [line["booking"] for line in starter.logged("booked_run_started")] == [number]
    assert other.logged("booked_run_started") == [] and await bookings(other) == started
