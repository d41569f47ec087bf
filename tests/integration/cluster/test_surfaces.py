"""What operators see of a cluster: `bcd status` and the server-rendered status page show every vantage's view
of each site side by side (a site one vantage sees down: `no_quorum`), and who holds the service's lock while
a run is in progress."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import aiohttp

from tests.integration.cluster.kit import ClusterEstate, Member
from tests.integration.cluster.test_executor import running_member


def bcd_status(member: Member, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"BCD_URL": member.url, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "bcd", "status", *args], capture_output=True, text=True, env=env,
                          timeout=30, check=False)


async def page(member: Member) -> str:
    async with aiohttp.ClientSession() as session, session.get(member.url + "/") as response:
        assert response.status == 200
        return await response.text()


def row(table: str, service: str = "payroll") -> str:
    (line,) = [line for line in table.splitlines() if line.startswith(service + " ")]
    return re.sub(r" +", " ", line).strip()


async def test_status_and_the_page_show_every_view_side_by_side_and_the_lock_holder(estate: ClusterEstate) -> None:
    steps = [{"name": "drain", "sleep": {"duration": "30s"}}, estate.step()]
    members = await estate.start(estate.config(steps=steps), "dorset", "hampshire")
    dorset, hampshire = members
    estate.dorset.down_for = {"dorset"}  # only the dorset vantage sees dorset down: no quorum
    for member in members:
        await member.wait_service(lambda s: s["views"].get("dorset", {}).get("sites", {}).get("dorset", {})
                                  .get("state") == "down" and "hampshire" in s["views"])
    await dorset.wait_service(lambda s: s["guard"] == "no_quorum")

    table = await asyncio.to_thread(bcd_status, dorset)
    assert table.returncode == 0, table.stderr
    header = table.stdout.splitlines()[0].split()
    assert header == ["SERVICE", "STATUS", "ACTIVE", "LOCK", "dorset", "hampshire"]
    assert row(table.stdout) == (
        "payroll blocked dorset - down (dorset: down, hampshire: up) up (dorset: up, hampshire: up)")
    assert "coordination (etcd): up" in table.stdout
    seen_from_hampshire = await asyncio.to_thread(bcd_status, hampshire)
    assert "up (hampshire: up, dorset: down)" in row(seen_from_hampshire.stdout)  # its own view first

    html = await page(dorset)
    assert '<li class="view-down" data-vantage="dorset">dorset: down</li>' in html
    assert '<li class="view-up" data-vantage="hampshire">hampshire: up</li>' in html
    assert '<span class="lock">lock: nobody</span>' in html

    estate.dorset.down_for = set()
    estate.dorset.status = 503  # now down for every vantage: one of them takes the lock and runs
    holder, _run = await running_member(members)
    other = next(member for member in members if member is not holder)
    for member in members:
        await member.wait_service(lambda s: s["lock"] is not None)
    table = await asyncio.to_thread(bcd_status, other)
    assert row(table.stdout).startswith(f"payroll failing_over dorset {holder.vantage} down (")
    assert "dorset: down" in row(table.stdout) and "hampshire: down" in row(table.stdout)
    assert f'<span class="lock">lock: {holder.vantage} (this instance)</span>' in await page(holder)
    assert f'<span class="lock">lock: {holder.vantage}</span>' in await page(other)
