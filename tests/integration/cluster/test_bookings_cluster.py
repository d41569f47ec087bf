"""Bookings in a cluster (real etcd): a maintenance window booked through one instance is listed by every
instance and, at its start, applied by each to its own view (status, alerts, automation), so none takes
automatic action while it lasts; maintenance from now is such a window, and ending it anywhere ends it everywhere."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bcd.bookings import Booking, BookingKind, BookingState
from bcd.coordination.etcd import EtcdClient
from tests.integration.cluster.kit import OPERATOR_TOKEN, WAIT, ClusterEstate, Member, gauge


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


async def test_maintenance_now_on_one_instance_is_kept_by_every_instance_and_ended_by_any(
        estate: ClusterEstate) -> None:
    """`bcd maintenance payroll --site dorset --for 1h` on dorset's instance: a window booked now, in etcd, so
    hampshire's instance puts dorset in maintenance in its own view too; ended through hampshire's instance, it
    ends on both, also on an instance that was stopped meanwhile (at its start)."""
    dorset, hampshire = await estate.start(estate.config(), "dorset", "hampshire")

    async def maintenance_now(member: Member) -> float:
        started = await member.call("POST", "/api/v1/services/payroll/maintenance", json_body={
            "site": "dorset", "duration": "1h", "reason": "disk swap"})
        assert started.status == 201, started
        assert started.body["detail"].startswith("maintenance of dorset for 3600s, on every instance (window "
                                                 "payroll.dorset@"), started
        return float(started.body["until"])

    async def in_maintenance(member: Member, until: float | None) -> None:
        service = await member.wait_service(lambda s: s["sites"]["dorset"]["maintenance_until"] is not None
                                            if until else s["sites"]["dorset"]["state"] != "maintenance")
        if until:
            assert service["sites"]["dorset"]["maintenance_until"] == pytest.approx(until, abs=1)

    async def end_through_hampshire() -> None:
        ended = await hampshire.call("DELETE", "/api/v1/services/payroll/maintenance?site=dorset")
        assert ended.status == 200 and ended.body["ended"] == ["dorset"], ended

    until = await maintenance_now(dorset)
    for member in (dorset, hampshire):
        await in_maintenance(member, until)
    (booking,) = await bookings(hampshire)
    assert (booking["kind"], booking["sites"], booking["by"], booking["state"]) == (
        "maintenance", ["dorset"], "olive", "booked")
    await end_through_hampshire()
    for member in (hampshire, dorset):
        await in_maintenance(member, None)
    line = await dorset.wait_log(lambda line: line.get("event") == "maintenance_window_withdrawn")
    assert (line["site"], line["by"]) == ("dorset", "olive"), line
    assert [(b["state"], b["ended_by"], b["detail"]) for b in await bookings(dorset)] == [
        ("cancelled", "olive", "ended by olive")]
    # again, with dorset's instance stopped while it is ended: its start ends what it kept
    until = await maintenance_now(hampshire)
    await in_maintenance(dorset, until)
    await dorset.stop()
    await end_through_hampshire()
    await in_maintenance(hampshire, None)
    before = len(dorset.log_lines)
    await dorset.start()
    await dorset.wait_ready(15)
    await in_maintenance(dorset, None)
    withdrawn = [line for line in dorset.log_lines[before:] if line.get("event") == "maintenance_window_withdrawn"]
    assert [(line["site"], line["by"]) for line in withdrawn] == [("dorset", "olive")], withdrawn


async def test_without_etcd_maintenance_is_set_and_ended_on_this_instance_only_and_says_so(
        estate: ClusterEstate) -> None:
    """etcd without a quorum: maintenance from now cannot be booked for every instance, but it still silences this
    instance's alerts and automation, and the answer says that the others do not know; ending it likewise."""
    dorset, hampshire = await estate.start(estate.config(), "dorset", "hampshire")
    estate.etcd.kill(1)
    estate.etcd.kill(2)
    try:
        async def cut_off() -> bool:
            return gauge(await dorset.metrics(), "bcd_cluster_coordination_up") == 0

        await dorset.wait_until(cut_off, WAIT)
        started = await dorset.call("POST", "/api/v1/services/payroll/maintenance", json_body={
            "site": "dorset", "duration": "1h", "reason": "disk swap"})
        assert started.status == 201, started
        assert started.body["detail"].startswith("maintenance of dorset for 3600s, on this instance only ("), started
        assert (await dorset.service())["sites"]["dorset"]["state"] == "maintenance"
        assert (await hampshire.service())["sites"]["dorset"]["state"] != "maintenance"
        assert dorset.logged("maintenance_here_only")[0]["hint"].startswith("the other instances do not know")
        ended = await dorset.call("DELETE", "/api/v1/services/payroll/maintenance?site=dorset")
        assert ended.status == 200 and ended.body["ended"] == ["dorset"], ended
        assert (await dorset.service())["sites"]["dorset"]["state"] != "maintenance"
    finally:
        await estate.etcd.restart(1)
        await estate.etcd.restart(2)


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


async def test_bookings_over_for_30_days_leave_etcd_and_the_others_stay(estate: ClusterEstate) -> None:
    """Each member prunes at its start (then hourly): a booking decided, or a window ended, more than 30 days ago
    goes (once: the two members' removals add up to the two keys); one over for a day, one to come and one left
    `starting` stay."""
    now, day = time.time(), 86400.0
    run = Booking("00000001", BookingKind.FAILOVER, now - 41 * day, "olive", "old move", now - 42 * day,
                  service="payroll")
    window = Booking("00000002", BookingKind.MAINTENANCE, now - 40 * day, "olive", "old patch", now - 41 * day,
                     service="payroll", sites=("dorset",), duration=3600.0, name="payroll.dorset@old")
    kept = [replace(run, id="00000003", state=BookingState.STARTED, decided_at=now - day),
            replace(run, id="00000004", at=now + day),
            replace(run, id="00000005", state=BookingState.STARTING, decided_at=now - 41 * day)]
    async with EtcdClient(estate.etcd.endpoints) as client:
        for booking in [replace(run, state=BookingState.STARTED, decided_at=now - 41 * day), window, *kept]:
            await client.put(f"/bcd/{estate.name}/bookings/{booking.id}", booking.encode())
    dorset, hampshire = await estate.start(estate.config(mode="manual"), "dorset", "hampshire")
    listed = await dorset.poll(lambda: bookings(dorset), lambda found: len(found) == 3, "three bookings left")
    assert sorted(b["id"] for b in listed) == ["00000003", "00000004", "00000005"]
    await hampshire.poll(lambda: bookings(hampshire), lambda found: len(found) == 3, "three bookings on hampshire")

    async def removed() -> list[int]:  # each member logs its removals once its prune is done
        return [line["removed"] for member in (dorset, hampshire) for line in member.logged("bookings_pruned")]

    await dorset.poll(removed, lambda counts: sum(counts) == 2, "two removals logged")
    assert all(line["kept_for"] == "30d" for member in (dorset, hampshire) for line in member.logged("bookings_pruned"))
