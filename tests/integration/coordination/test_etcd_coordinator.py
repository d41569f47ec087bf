"""Two EtcdCoordinators (two bcd instances, "dorset" and "hampshire") over a real three-member etcd cluster.

The partition tests put dorset behind TCP proxies that the test can cut: its connections stall, as when a
link goes down, while hampshire keeps talking to etcd directly.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from bcd.coordination import CoordinationUnavailable, EtcdCoordinator, Lock, ViewsChanged, active_key, run_key
from bcd.coordination.etcd import EtcdClient
from tests.helpers.etcd import EtcdCluster, cuttable_proxies, wait_for

TTL = 1  # seconds: etcd's minimum with --election-timeout 100


@pytest.fixture
def cluster_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)


class Instance:
    """One coordinator with its own client, recording the locks it lost."""

    def __init__(self, endpoints: list[str], cluster: str, vantage: str, ttl: int = TTL) -> None:
        self.client = EtcdClient(endpoints, request_timeout=0.2, deadline=0.3)
        self.lost: list[tuple[str, float]] = []
        self.coordinator = EtcdCoordinator(
            self.client, cluster=cluster, vantage=vantage, lease_ttl=ttl,
            on_lost=lambda service: self.lost.append((service, time.monotonic())),
        )

    async def close(self) -> None:
        await self.coordinator.stop()
        await self.client.close()


@asynccontextmanager
async def instances(*specs: tuple[list[str], str, str]) -> AsyncIterator[list[Instance]]:
    async with AsyncExitStack() as stack:
        started = []
        for endpoints, cluster, vantage in specs:
            instance = Instance(endpoints, cluster, vantage)
            stack.push_async_callback(instance.close)
            await instance.coordinator.start()
            started.append(instance)
        await wait_for(lambda: all(i.coordinator.available for i in started))
        yield started


async def acquire_when_free(instance: Instance, service: str, timeout: float = 5.0) -> tuple[Lock, float]:
    """Poll acquire() every 20 ms; (the lock, when it was granted)."""
    async with asyncio.timeout(timeout):
        while True:
            lock = await instance.coordinator.acquire(service)
            if lock is not None:
                return lock, time.monotonic()
            await asyncio.sleep(0.02)


async def test_one_holder_and_increasing_tokens(etcd_cluster: EtcdCluster, cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b):
        first = await a.coordinator.acquire("web")
        assert first is not None
        assert await b.coordinator.acquire("web") is None
        assert await a.coordinator.acquire("web") is None  # a second run on the same instance is refused too
        now = time.monotonic()
        assert first.valid(now) and 0 < first.remaining(now) <= TTL

        other = await b.coordinator.acquire("db")  # locks are per service
        assert other is not None and other.token > first.token

        await a.coordinator.release(first)
        assert not first.valid(time.monotonic())
        second = await b.coordinator.acquire("web")
        assert second is not None and second.token > other.token > first.token
        assert await a.coordinator.acquire("web") is None

        # the lock outlives several TTLs while the keepalive runs, and its validity moves forward
        until = second.valid_until
        await asyncio.sleep(TTL * 2.5)
        assert second.valid(time.monotonic()) and second.valid_until > until
        assert await a.coordinator.acquire("web") is None
        assert a.lost == b.lost == []


async def test_takeover_right_after_the_holder_stops(etcd_cluster: EtcdCluster, cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b):
        held = await a.coordinator.acquire("web")
        assert held is not None
        await a.coordinator.stop()  # revokes the lease: the lock goes at once
        started = time.monotonic()
        lock, granted = await acquire_when_free(b, "web", timeout=1.0)
        assert lock.token > held.token
        assert granted - started < 1.0  # no waiting for the TTL
        assert a.lost == []  # a deliberate stop is not a loss


async def test_partitioned_holder_loses_the_lock_before_anyone_takes_it(
    etcd_cluster: EtcdCluster, cluster_name: str
) -> None:
    async with cuttable_proxies(etcd_cluster) as proxies:
        specs = ([p.endpoint for p in proxies], cluster_name, "dorset"), (etcd_cluster.endpoints, cluster_name,
                                                                          "hampshire")
        async with instances(*specs) as (a, b):
            held = await a.coordinator.acquire("web")
            assert held is not None
            await a.coordinator.publish_view(b'{"from": "dorset"}')
            await wait_for(lambda: "dorset" in b.coordinator.views())

            for proxy in proxies:
                proxy.cut()
            cut_at = time.monotonic()
            assert await b.coordinator.acquire("web") is None  # not before the lease has run out
            lock, granted = await acquire_when_free(b, "web")
            takeover = granted - cut_at

            # the holder stopped trusting its lock before the other instance could take it
            assert held.valid_until <= granted
            assert not held.valid(time.monotonic())
            assert [service for service, _ in a.lost] == ["web"]
            assert a.lost[0][1] <= granted + 0.2
            assert not a.coordinator.available
            assert lock.token > held.token
            # the partitioned instance's view went with its lease
            await wait_for(lambda: "dorset" not in b.coordinator.views(), timeout=1.0)
            assert await a.coordinator.fenced_put(held, run_key("web", "1"), b"stale") is False
            with pytest.raises(CoordinationUnavailable):
                await a.coordinator.acquire("web")

            for proxy in proxies:
                proxy.heal()
            await wait_for(lambda: a.coordinator.available)  # a new lease; the view is published again
            await wait_for(lambda: "dorset" in b.coordinator.views())
            assert await a.coordinator.acquire("web") is None
    print(f"\nlock takeover after a partition: {takeover:.2f} s after the cut with a {TTL} s TTL; the holder's "
          f"validity ended {granted - held.valid_until:.2f} s and its on_lost came {granted - a.lost[0][1]:.2f} s "
          "before the takeover")
    # keepalives go every TTL/3, so the server-side lease ends at most a TTL after the cut (etcd checks for
    # expired leases every 500 ms)
    assert takeover <= TTL + 1.0


async def test_fenced_put_refuses_a_stale_token(etcd_cluster: EtcdCluster, cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b), \
            EtcdClient(endpoints) as operator:
        old = await a.coordinator.acquire("web")
        assert old is not None
        assert await a.coordinator.fenced_put(old, run_key("web", "r1"), b"started")

        # someone removes the lock behind the holder's back (etcdctl del), and the other instance takes it:
        # the old holder still believes its lock valid, and etcd refuses its write
        await operator.delete(f"/bcd/{cluster_name}/locks/web")
        new = await b.coordinator.acquire("web")
        assert new is not None and new.token > old.token
        assert old.valid(time.monotonic())
        assert await a.coordinator.fenced_put(old, run_key("web", "r1"), b"step 2 by the stale holder") is False
        assert [service for service, _ in a.lost] == ["web"]
        assert not old.valid(time.monotonic())

        assert await b.coordinator.fenced_put(new, active_key("web"), b"hampshire")
        assert await a.coordinator.read("runs/web/") == {"runs/web/r1": b"started"}
        assert await a.coordinator.read("active/") == {"active/web": b"hampshire"}
        await b.coordinator.release(new)
        assert await b.coordinator.fenced_put(new, active_key("web"), b"after release") is False


async def test_views_are_shared_and_withdrawn(etcd_cluster: EtcdCluster, cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b):
        await a.coordinator.publish_view(b'{"web": {"dorset": "up"}}')
        await b.coordinator.publish_view(b'{"web": {"dorset": "down"}}')
        await wait_for(lambda: set(a.coordinator.views()) == set(b.coordinator.views()) == {"dorset", "hampshire"})
        value, age = b.coordinator.views()["dorset"]
        assert value == b'{"web": {"dorset": "up"}}' and 0 <= age < 1

        await a.coordinator.publish_view(b'{"web": {"dorset": "degraded"}}')
        await wait_for(lambda: b.coordinator.views()["dorset"][0] == b'{"web": {"dorset": "degraded"}}')
        await a.coordinator.withdraw_view()
        await wait_for(lambda: "dorset" not in b.coordinator.views())
        await wait_for(lambda: "dorset" not in a.coordinator.views())

        # a view lives as long as its publisher: stopping revokes the lease
        await b.coordinator.stop()
        await wait_for(lambda: a.coordinator.views() == {}, timeout=1.0)


async def test_a_beat_keeps_a_view_fresh_without_writing_it_again(etcd_cluster: EtcdCluster,
                                                                  cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b):
        await a.coordinator.publish_view(b'{"web": {"dorset": "up"}}')
        await wait_for(lambda: "dorset" in b.coordinator.views())
        revision = b.coordinator.view_revisions()["dorset"]
        await wait_for(lambda: b.coordinator.views()["dorset"][1] >= 0.3)  # ageing: nothing written since
        await a.coordinator.beat()
        await wait_for(lambda: b.coordinator.views()["dorset"][1] < 0.2)  # fresh again, and still the same view
        assert b.coordinator.views()["dorset"][0] == b'{"web": {"dorset": "up"}}'
        assert b.coordinator.view_revisions()["dorset"] == revision
        assert not any(key.startswith("beats/") for key in b.coordinator.records())
        # a beat naming another revision than the view's (an older view's) does not count
        await a.client.put(f"/bcd/{cluster_name}/beats/dorset", b"%d" % (revision - 1))
        await wait_for(lambda: b.coordinator.views()["dorset"][1] >= 0.3)
        # a changed view is written again: a beat then names the new one
        await a.coordinator.publish_view(b'{"web": {"dorset": "down"}}')
        await wait_for(lambda: b.coordinator.views()["dorset"][0] == b'{"web": {"dorset": "down"}}')
        await wait_for(lambda: b.coordinator.views()["dorset"][1] >= 0.3)
        await a.coordinator.beat()
        await wait_for(lambda: b.coordinator.views()["dorset"][1] < 0.2)


async def test_without_quorum_nothing_is_decided_and_it_recovers(etcd_cluster: EtcdCluster,
                                                                 cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset")) as (a,):
        held = await a.coordinator.acquire("web")
        assert held is not None
        etcd_cluster.kill(1)
        etcd_cluster.kill(2)
        await wait_for(lambda: not a.coordinator.available, timeout=TTL + 1)
        await wait_for(lambda: a.lost, timeout=TTL + 1)
        assert not held.valid(time.monotonic())
        started = time.monotonic()
        with pytest.raises(CoordinationUnavailable):
            await a.coordinator.acquire("db")
        assert time.monotonic() - started < 0.5

        await etcd_cluster.restart(1)
        await wait_for(lambda: a.coordinator.available, timeout=5)
        # the old lease (and the lock bound to it) is revoked as soon as etcd answers again
        lock, _ = await acquire_when_free(a, "web", timeout=2)
        assert lock.token > held.token


async def test_the_lock_is_taken_only_while_the_views_counted_are_unchanged(
    etcd_cluster: EtcdCluster, cluster_name: str
) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b):
        await b.coordinator.publish_view(b'{"web": {"dorset": "down"}}')
        await wait_for(lambda: "hampshire" in a.coordinator.views())
        counted = {"hampshire": a.coordinator.view_revisions()["hampshire"]}  # what a decision of dorset read

        # hampshire's view changes after dorset read it, before dorset's lock transaction: no lock
        await b.coordinator.publish_view(b'{"web": {"dorset": "up"}}')
        with pytest.raises(ViewsChanged, match=rf"hampshire \(revision {counted['hampshire']} -> \d+\)"):
            await a.coordinator.acquire("web", counted)
        assert await a.coordinator.read("locks/") == {}

        # once the change has arrived, a decision counting the view as it is now takes the lock
        await wait_for(lambda: a.coordinator.views()["hampshire"][0] == b'{"web": {"dorset": "up"}}')
        now_counted = {"hampshire": a.coordinator.view_revisions()["hampshire"]}
        assert now_counted["hampshire"] > counted["hampshire"]
        lock = await a.coordinator.acquire("web", now_counted)
        assert lock is not None
        await a.coordinator.release(lock)

        # a counted view that went (withdrawn, or its lease ended) is a change too
        await b.coordinator.withdraw_view()
        with pytest.raises(ViewsChanged, match=r"hampshire \(revision \d+ -> gone\)"):
            await a.coordinator.acquire("web", now_counted)
        # the lock held elsewhere still reads as held, whatever the views
        other = await b.coordinator.acquire("web")
        assert other is not None
        assert await a.coordinator.acquire("web", now_counted) is None


async def test_the_lock_is_refused_when_a_view_not_counted_was_written_after_the_views_were_read(
    etcd_cluster: EtcdCluster, cluster_name: str
) -> None:
    """A vantage absent when a decision read the views (or whose view was too old to count) may have changed
    its outcome: written since, it refuses the lock too. Our own view, published again meanwhile, does not."""
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire"),
                         (endpoints, cluster_name, "witness")) as (a, b, c):
        await b.coordinator.publish_view(b'{"web": {"dorset": "down"}}')
        await wait_for(lambda: "hampshire" in a.coordinator.views())
        counted = {"hampshire": a.coordinator.view_revisions()["hampshire"]}  # what a decision of dorset read
        seen_at = a.coordinator.views_revision()
        assert seen_at >= counted["hampshire"]

        await a.coordinator.publish_view(b'{"web": {"dorset": "down"}}')  # ours, again: no change of theirs
        lock = await a.coordinator.acquire("web", counted, seen_at)
        assert lock is not None
        await a.coordinator.release(lock)

        await c.coordinator.publish_view(b'{"web": {"dorset": "up"}}')  # the witness appears after the read
        unchecked = await a.coordinator.acquire("web", counted)  # the counted views alone: unchanged, taken
        assert unchecked is not None
        await a.coordinator.release(unchecked)
        with pytest.raises(ViewsChanged, match=r"witness \(written at revision \d+, not counted\)") as refused:
            await a.coordinator.acquire("web", counted, seen_at)
        assert await a.coordinator.read("locks/") == {}
        # once the cache has reached the refusal's revision, a decision reading the views then takes the lock
        await wait_for(lambda: a.coordinator.views_revision() >= refused.value.revision)
        assert "witness" in a.coordinator.view_revisions()
        now_counted = {vantage: revision for vantage, revision in a.coordinator.view_revisions().items()
                       if vantage != "dorset"}
        lock = await a.coordinator.acquire("web", now_counted, a.coordinator.views_revision())
        assert lock is not None


async def test_fenced_delete_removes_records_only_for_the_holder(etcd_cluster: EtcdCluster, cluster_name: str) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b), \
            EtcdClient(endpoints) as operator:
        lock = await a.coordinator.acquire("web")
        assert lock is not None
        keys = [run_key("web", str(token)) for token in range(1, 251)]  # more than one transaction may hold
        for key in keys:
            assert await a.coordinator.fenced_put(lock, key, b"{}")
        assert await a.coordinator.fenced_delete(lock, keys[:-1])
        assert await a.coordinator.read("runs/web/") == {keys[-1]: b"{}"}

        await operator.delete(f"/bcd/{cluster_name}/locks/web")  # the lock goes behind the holder's back
        new = await b.coordinator.acquire("web")
        assert new is not None
        assert await a.coordinator.fenced_delete(lock, keys[-1:]) is False  # the stale holder deletes nothing
        assert await b.coordinator.read("runs/web/") == {keys[-1]: b"{}"}
        assert [service for service, _ in a.lost] == ["web"]


async def test_swap_writes_only_over_the_revision_it_was_given_and_bookings_are_no_records(
    etcd_cluster: EtcdCluster, cluster_name: str,
) -> None:
    endpoints = etcd_cluster.endpoints
    async with instances((endpoints, cluster_name, "dorset"), (endpoints, cluster_name, "hampshire")) as (a, b):
        assert await a.coordinator.swap("bookings/x1", b"booked", 0)
        assert not await b.coordinator.swap("bookings/x1", b"other", 0)  # only if absent: it is not
        await wait_for(lambda: "x1" in b.coordinator.entries("bookings"))
        value, revision = b.coordinator.entries("bookings")["x1"]
        assert value == b"booked"
        assert await a.coordinator.swap("bookings/x1", b"taken by dorset", revision)
        assert not await b.coordinator.swap("bookings/x1", b"taken by hampshire", revision)  # stale: dorset won
        await wait_for(lambda: b.coordinator.entries("bookings")["x1"][0] == b"taken by dorset")
        assert b.coordinator.entries_version("bookings") >= 2
        assert not any(key.startswith("bookings/") for key in b.coordinator.records())
        assert not await b.coordinator.remove("bookings/x1", revision)  # stale: dorset changed it since
        current = b.coordinator.entries("bookings")["x1"][1]
        assert await b.coordinator.remove("bookings/x1", current)
        await wait_for(lambda: "x1" not in a.coordinator.entries("bookings"))
