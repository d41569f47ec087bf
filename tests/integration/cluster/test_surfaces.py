"""What operators see of a cluster: `bcd status` and the server-rendered status page show every vantage's view
of each site side by side (a site one vantage sees down: `no_quorum`), and who holds the service's lock while
a run is in progress; how old each view is, with its reason, and a view older than the lease marked stale."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import escape
from typing import Any

import aiohttp

from tests.helpers.etcd import CuttableProxy, cuttable_proxies
from tests.integration.cluster.kit import WAIT, ClusterEstate, Member
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


LEASE_TTL = 12.0


@asynccontextmanager
async def cut_off_dorset(estate: ClusterEstate) -> AsyncIterator[tuple[Member, Member, CuttableProxy]]:
    """dorset (reaching etcd through a proxy the test can cut) and hampshire, both seeing both views; with a
    lease of LEASE_TTL: a view becomes stale LEASE_TTL after it was last received, and goes at twice that."""
    config = estate.config()
    config["cluster"].update({"etcd": {"endpoints": ["${BCD_ETCD}"]}, "lease_ttl": f"{LEASE_TTL:g}s"})
    async with cuttable_proxies(estate.etcd) as proxies:
        (dorset,) = await estate.start(config, "dorset", env={"BCD_ETCD": proxies[0].endpoint})
        hampshire = Member(estate.config_path, "hampshire", estate.tmp_path / "state-hampshire",
                           {"BCD_ETCD": estate.etcd.endpoints[1]})
        estate.members.append(hampshire)
        await hampshire.start()
        await hampshire.wait_ready(WAIT)
        for member in (dorset, hampshire):
            await member.wait_service(lambda s: set(s["views"]) == {"dorset", "hampshire"} and all(
                site["state"] == "up" for view in s["views"].values() for site in view["sites"].values()))
        yield dorset, hampshire, proxies[0]


async def stale_view(member: Member, vantage: str) -> dict[str, Any]:
    """`member`'s payroll once its view from `vantage` is stale (at most LEASE_TTL after it was cut off)."""
    return await member.wait_service(lambda s: s["views"].get(vantage, {}).get("stale") is True,
                                     timeout=LEASE_TTL + WAIT)


async def test_status_and_the_page_say_a_view_older_than_the_lease_is_stale_with_its_age_and_reason(
        estate: ClusterEstate) -> None:
    async with cut_off_dorset(estate) as (dorset, _hampshire, link):
        fresh = (await dorset.service())["views"]
        assert fresh["hampshire"]["stale"] is False and fresh["hampshire"]["lease_ttl"] == LEASE_TTL
        link.cut()  # dorset hears no more of hampshire's view (nor of etcd)
        payroll = await stale_view(dorset, "hampshire")
        view = payroll["views"]["hampshire"]
        assert LEASE_TTL < view["age"] < 2 * LEASE_TTL, view
        assert payroll["views"]["dorset"]["stale"] is False  # its own view is never stale

        table = await asyncio.to_thread(bcd_status, dorset, "--views")
        assert table.returncode == 0, table.stderr
        assert re.search(r"up \(dorset: up, hampshire: up, stale \d+\.\ds\)", row(table.stdout)), table.stdout
        lines = [re.sub(r" +", " ", line).strip() for line in table.stdout.splitlines()]
        assert "dorset received 0.0s ago" in lines
        (hampshire_line,) = [line for line in lines if line.startswith("hampshire received ")]
        assert re.fullmatch(r"hampshire received \d+\.\ds ago - STALE: older than its lease \(12s\): that instance "
                            r"may be gone, or this one cut off from etcd", hampshire_line), hampshire_line
        reason = view["sites"]["dorset"]["reason"]
        assert f"payroll in dorset, as hampshire sees it (stale view): up: {reason}" in lines

        html = await page(dorset)
        stale = re.search(r'<li class="view-up view-stale" data-vantage="hampshire">hampshire: up — stale: not '
                          r'received for (\d+\.\d)s \(lease 12s\)</li>', html)
        assert stale is not None and float(stale[1]) > LEASE_TTL, html
        assert '<li class="view-up" data-vantage="dorset">dorset: up</li>' in html
        title = re.search(r'<ul class="views" aria-label="as each vantage sees it" title="([^"]*)">'
                          r'<li class="view-up" data-vantage="dorset">', html)
        assert title is not None
        assert re.search(rf"hampshire: up, received \d+\.\ds ago \(stale\): {re.escape(escape(reason))}", title[1])
