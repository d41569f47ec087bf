"""Two bcd instances on a real etcd, each watching a site of 20 services (10 s interval, fall 2): when the site
dies, a correlated re-probe and fast confirmation at each vantage (and the other's view) bring a quorum, and
the failover it allows, within 3 s, not within fall x interval."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from tests.integration.cluster.kit import ClusterEstate


def stamp(line: dict[str, Any]) -> float:
    return datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()


async def test_a_dead_site_reaches_quorum_within_3_seconds(estate: ClusterEstate) -> None:
    config = estate.config()
    config["defaults"] = {"interval": "10s", "timeout": "500ms", "rise": 1, "fall": 2, "fast_interval": "1s"}
    for i in range(19):  # the rest of the site: services without a failover of their own
        config["services"][f"svc{i:02}"] = {"active": "dorset", "sites": {
            "dorset": {"probes": [{"name": "health", "http": {"url": estate.dorset.url}}]},
            "hampshire": {"probes": [{"name": "health", "http": {"url": estate.hampshire.url}}]},
        }}
    members = await estate.start(config, "dorset", "hampshire")
    died = time.time()
    estate.dorset.status = 503  # the whole site, for every vantage

    for member in members:
        await member.wait_service(lambda s: s["active"] == "hampshire" and s["status"] == "ok")
    holders = [member for member in members
               if any(not run["evidence"].get("remote_run") for run in await member.runs())]
    (holder,) = holders
    (run,) = await holder.runs()
    assert "quorum: 2 of 2 live vantages see dorset down, 2 needed" in run["reason"]
    (started,) = holder.logged("run_started")
    assert stamp(started) - died <= 3.0, stamp(started) - died
    for member in members:
        assert [line["site"] for line in member.logged("site_reprobe")][:1] == ["dorset"]
