"""The cluster's keys kept by one watch (KeyCache, through EtcdCoordinator) over a real three-member etcd:
"dorset" reads nothing after its first full read, yet has every view and run record "hampshire" writes; its
watch is resumed where it broke, read again in full when etcd compacted the revisions it needed, and read in
full on the safety net's timer.

Dorset's first endpoint is a TCP proxy the test can cut: its watch stream (opened there, since the first
endpoint answers) stalls while hampshire writes, and closing the proxy breaks the stream at a moment the test
chooses; dorset's other calls move on to the next endpoint.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest

from bcd.coordination import EtcdCoordinator, Lock, active_key, run_key
from bcd.coordination.etcd import EtcdClient
from tests.helpers.etcd import CuttableProxy, EtcdCluster, cuttable_proxies, wait_for

RANGE = "/v3/kv/range"


@pytest.fixture
def cluster_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)


@dataclass
class Pair:
    dorset: EtcdCoordinator  # the watcher; its client's first endpoint is `proxy`
    dorset_client: EtcdClient
    hampshire: EtcdCoordinator  # the other instance, writing
    lock: Lock  # hampshire's lock of payroll, for its fenced run records
    operator: EtcdClient  # the test's own client: full reads to compare with, compaction
    proxy: CuttableProxy
    prefix: str

    async def full_read(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(the views, every other key) as etcd has them now, relative keys to values."""
        kvs, _ = await self.operator.range(self.prefix, prefix=True)
        everything = {kv.key.removeprefix(self.prefix): kv.value for kv in kvs}
        views = {key.removeprefix("views/"): value for key, value in everything.items() if key.startswith("views/")}
        return views, {key: value for key, value in everything.items() if not key.startswith("views/")}

    def cached(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """(the views, every other key) as dorset's watch has them."""
        return {vantage: value for vantage, (value, _) in self.dorset.views().items()}, self.dorset.records()

    async def caught_up(self) -> None:
        """Return once dorset's cache equals a full read (made at each check)."""
        async def equal() -> bool:
            return self.cached() == await self.full_read()

        await wait_for(equal, timeout=10)

    async def write_run(self, token: int, result: str = "running") -> None:
        record = f'{{"vantage": "hampshire", "token": {token}, "result": "{result}"}}'.encode()
        assert await self.hampshire.fenced_put(self.lock, run_key("payroll", str(token)), record)

    async def compact(self) -> int:
        """Compact etcd's history up to its current revision; that revision."""
        _, revision = await self.operator.range(self.prefix, prefix=True)
        async with aiohttp.ClientSession() as http:
            body = {"revision": str(revision), "physical": True}
            async with http.post(self.operator.preferred_endpoint + "/v3/kv/compaction", json=body) as response:
                assert response.status == 200, await response.text()
        return revision


@asynccontextmanager
async def pair(etcd_cluster: EtcdCluster, cluster_name: str, full_read_every: float = 30.0,
               ) -> AsyncIterator[Pair]:
    async with AsyncExitStack() as stack:
        proxies = await stack.enter_async_context(cuttable_proxies(etcd_cluster))
        dorset_client = EtcdClient([proxies[0].endpoint, *etcd_cluster.endpoints[1:]], request_timeout=0.3,
                                   deadline=1.0)
        hampshire_client = EtcdClient(etcd_cluster.endpoints, request_timeout=0.3, deadline=1.0)
        operator = EtcdClient(etcd_cluster.endpoints)
        for client in (dorset_client, hampshire_client, operator):
            stack.push_async_callback(client.close)
        dorset = EtcdCoordinator(dorset_client, cluster=cluster_name, vantage="dorset", lease_ttl=3,
                                 full_read_every=full_read_every)
        hampshire = EtcdCoordinator(hampshire_client, cluster=cluster_name, vantage="hampshire", lease_ttl=3)
        for coordinator in (dorset, hampshire):
            stack.push_async_callback(coordinator.stop)
            await coordinator.start()
        await wait_for(lambda: dorset.available and hampshire.available)
        lock = await hampshire.acquire("payroll")
        assert lock is not None
        yield Pair(dorset, dorset_client, hampshire, lock, operator, proxies[0], f"/bcd/{cluster_name}/")


async def test_views_and_run_records_arrive_through_the_watch_without_a_read(
    etcd_cluster: EtcdCluster, cluster_name: str
) -> None:
    async with pair(etcd_cluster, cluster_name) as p:
        await p.caught_up()
        reads = p.dorset_client.requests[RANGE]
        delays = []
        for n in range(1, 6):
            started = time.monotonic()
            await p.hampshire.publish_view(f'{{"n": {n}}}'.encode())
            await p.write_run(n, "succeeded")
            await wait_for(lambda n=n: p.dorset.views().get("hampshire", (b"", 0))[0] == f'{{"n": {n}}}'.encode()
                           and run_key("payroll", str(n)) in p.dorset.records())
            delays.append(time.monotonic() - started)
        assert await p.hampshire.fenced_delete(p.lock, [run_key("payroll", "1")])
        await wait_for(lambda: run_key("payroll", "1") not in p.dorset.records())
        await p.caught_up()
        # the lock, run records and active site were never read by dorset: they came through its watch
        assert p.dorset_client.requests[RANGE] == reads
        assert p.dorset.keys.full_reads == 1 and p.dorset.keys.missed == 0
    print(f"\nwatch delivery of a view and a run record: max {max(delays) * 1000:.0f} ms over {len(delays)}")
    assert max(delays) < 1.0  # the bound: a write arrives within a second (in practice, a few milliseconds)


async def test_a_broken_watch_is_resumed_from_the_revision_after_the_last_event(
    etcd_cluster: EtcdCluster, cluster_name: str
) -> None:
    async with pair(etcd_cluster, cluster_name) as p:
        await p.write_run(1)
        await p.caught_up()
        p.proxy.cut()  # dorset's watch stalls: what hampshire writes now does not reach it
        await p.hampshire.publish_view(b'{"while": "cut"}')
        for token in range(2, 12):
            await p.write_run(token)
        assert await p.hampshire.fenced_delete(p.lock, [run_key("payroll", "1")])
        assert run_key("payroll", "11") not in p.dorset.records()
        await p.proxy.close()  # the stream breaks; the client reopens it elsewhere, from where it was
        await p.caught_up()
        assert p.dorset.keys.full_reads == 1  # resumed, not read again: every change came as an event
        assert p.dorset.keys.compactions == 0 and p.dorset.keys.missed == 0


async def test_a_watch_broken_by_compaction_is_resumed_without_a_missed_view_or_run_record(
    etcd_cluster: EtcdCluster, cluster_name: str
) -> None:
    async with pair(etcd_cluster, cluster_name) as p:
        await p.hampshire.publish_view(b'{"before": "cut"}')
        for token in range(1, 4):
            await p.write_run(token)
        await p.caught_up()
        last_seen = p.dorset.keys.revision
        p.proxy.cut()  # dorset's watch stalls at `last_seen`
        await p.hampshire.publish_view(b'{"while": "cut"}')
        for token in range(4, 54):  # many writes, then the history dorset would resume from is compacted away
            await p.write_run(token, "succeeded")
        assert await p.hampshire.fenced_delete(p.lock, [run_key("payroll", "1"), run_key("payroll", "2")])
        assert await p.hampshire.fenced_put(p.lock, active_key("payroll"), b'{"site": "hampshire"}')
        compacted = await p.compact()
        assert compacted > last_seen + 50
        await p.proxy.close()  # the stream breaks; resuming from last_seen + 1 meets the compaction
        await p.caught_up()
        assert p.dorset.keys.compactions == 1  # the compaction was met, and a full read made up for it
        assert p.dorset.keys.full_reads == 2 and p.dorset.keys.revision >= compacted
        assert p.dorset.views()["hampshire"][0] == b'{"while": "cut"}'
        records = p.dorset.records()
        assert {key for key in records if key.startswith("runs/")} == {run_key("payroll", str(t)) for t in range(3, 54)}
        assert records[active_key("payroll")] == b'{"site": "hampshire"}'
        # and the watch goes on from the full read's revision: later writes arrive as events
        reads = p.dorset_client.requests[RANGE]
        await p.write_run(54)
        await p.hampshire.publish_view(b'{"after": "compaction"}')
        await p.caught_up()
        assert p.dorset_client.requests[RANGE] == reads
        assert p.dorset.keys.missed == 0


async def test_the_safety_net_reads_every_key_on_its_timer(etcd_cluster: EtcdCluster, cluster_name: str) -> None:
    async with pair(etcd_cluster, cluster_name, full_read_every=0.5) as p:
        await wait_for(lambda: p.dorset.keys.full_reads >= 2)
        first, started = p.dorset.keys.full_reads, time.monotonic()
        await wait_for(lambda: p.dorset.keys.full_reads >= first + 4)
        took = time.monotonic() - started
        assert 4 * 0.5 - 0.3 <= took <= 4 * 0.5 + 1.5, took  # one read every 0.5 s, no more, no fewer
        assert p.dorset_client.requests[RANGE] == p.dorset.keys.full_reads  # no other read

        await p.write_run(1)
        await wait_for(lambda: run_key("payroll", "1") in p.dorset.records())
        # a watch that lost an event (etcd's never does: simulated by dropping the key from the cache) is
        # repaired by the next safety-net read, which counts and logs what it found missing
        del p.dorset.keys.group("runs")["payroll/1"]  # type: ignore[attr-defined]
        assert run_key("payroll", "1") not in p.dorset.records()
        await wait_for(lambda: run_key("payroll", "1") in p.dorset.records(), timeout=2)
        assert p.dorset.keys.missed == 1
