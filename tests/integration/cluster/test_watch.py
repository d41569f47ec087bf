"""Two `bcd run` processes (dorset, hampshire) over a real three-member etcd, counted from etcd's own /metrics:
once started, neither member reads the cluster's keys (no range call reaches etcd), yet each sees the other's
view change as it happens: it comes through the watch. (Before watches, each member read the whole prefix
every 0.5 s.)"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Awaitable
from typing import Any

from bcd.coordination.etcd import EtcdClient
from tests.helpers.etcd import EtcdCluster, wait_for
from tests.integration.cluster.kit import ClusterEstate


def _ranges(endpoint: str) -> float:
    with urllib.request.urlopen(endpoint + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(value) for value in
               re.findall(r'^grpc_server_started_total\{grpc_method="Range",[^}]*\} (\S+)$', text, re.MULTILINE))


async def range_calls(etcd: EtcdCluster) -> float:
    """Range calls every member of `etcd` has served so far (the JSON gateway's included)."""
    counts = await asyncio.gather(*(asyncio.to_thread(_ranges, endpoint) for endpoint in etcd.endpoints))
    return sum(counts)


async def test_members_follow_each_other_s_views_without_reading_etcd(estate: ClusterEstate) -> None:
    config = estate.config()
    config["cluster"]["full_read_every"] = "1h"  # the safety net stays out of the count
    dorset, hampshire = await estate.start(config, "dorset", "hampshire")
    before = await range_calls(estate.etcd)
    await estate.dorset_probed([dorset, hampshire], 8)  # two seconds of probing, as both members count it
    assert await range_calls(estate.etcd) == before  # polling would have made 8 whole-prefix reads by now

    estate.dorset.down_for = {"hampshire"}  # only hampshire sees dorset down: its view changes, no quorum

    def hampshire_sees_dorset_down(service: dict[str, Any]) -> bool:
        return bool(service["views"]["hampshire"]["sites"]["dorset"]["state"] == "down")

    await dorset.wait_service(hampshire_sees_dorset_down)
    await hampshire.wait_service(lambda service: service["guard"] == "no_quorum")
    assert await range_calls(estate.etcd) == before


async def test_an_unchanged_view_is_beaten_for_not_written_again_unless_a_vantage_reads_no_beats(
        estate: ClusterEstate) -> None:
    """A member whose view does not change writes only a beat every third of the lease (1 s here): its view keeps
    its revision, and the other member still sees it fresh. While a vantage whose view says nothing of beats (a
    bcd before them) is live, the whole view is written again each time instead."""
    _, hampshire = await estate.start(estate.config(), "dorset", "hampshire")
    prefix = f"/bcd/{estate.name}/"
    async with EtcdClient(estate.etcd.endpoints) as client:

        async def revision(key: str) -> int:
            kvs, _ = await client.range(prefix + key)
            return kvs[0].mod_revision if kvs else 0

        async def beats_after(count: int) -> None:  # wait for `count` more beats of dorset's
            for _ in range(count):
                last = await revision("beats/dorset")
                await wait_for(lambda last=last: _newer(revision("beats/dorset"), last), timeout=5)

        view = await revision("views/dorset")
        await beats_after(3)
        assert await revision("views/dorset") == view  # three seconds: beats only, the view not written again
        service = await hampshire.service()
        assert service["views"]["dorset"]["age"] < 1.5 and not service["views"]["dorset"]["stale"], service
        lease, _ = await client.lease_grant(30)
        await client.put(prefix + "views/oldbcd", b'{"vantage": "oldbcd", "at": 0, "services": {}}', lease=lease)
        await wait_for(lambda: _newer(revision("views/dorset"), view), timeout=5)  # written whole again
        again = await revision("views/dorset")
        await wait_for(lambda: _newer(revision("views/dorset"), again), timeout=5)  # and again: while oldbcd lives
        await client.lease_revoke(lease)


async def _newer(revision: Awaitable[int], than: int) -> bool:
    return await revision > than
