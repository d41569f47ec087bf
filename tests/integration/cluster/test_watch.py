"""Two `bcd run` processes (dorset, hampshire) over a real three-member etcd, counted from etcd's own /metrics:
once started, neither member reads the cluster's keys (no range call reaches etcd), yet each sees the other's
view change as it happens: it comes through the watch. (Before watches, each member read the whole prefix
every 0.5 s.)"""

from __future__ import annotations

import asyncio
import re
import urllib.request
from typing import Any

from tests.helpers.etcd import EtcdCluster
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
