"""The JSON-gateway client against a real three-member etcd cluster on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

import aiohttp
import pytest

from bcd.coordination.etcd import (
    GRPC_NOT_FOUND,
    Compare,
    EtcdClient,
    EtcdCompacted,
    EtcdRequestError,
    EtcdUnavailable,
    EventType,
    Op,
    WatchEvent,
    prefix_end,
)
from tests.helpers import free_port, silent_server
from tests.helpers.etcd import EtcdCluster, cuttable_proxies, wait_for


async def put_retrying(client: EtcdClient, key: str, value: bytes, timeout: float = 5.0) -> int:
    """A put that waits out a leader election (a killed leader is replaced within a few hundred ms)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await client.put(key, value)
            except EtcdUnavailable:
                await asyncio.sleep(0.02)


async def next_events(events: AsyncIterator[WatchEvent], count: int, timeout: float = 5.0) -> list[WatchEvent]:
    async with asyncio.timeout(timeout):
        return [await anext(events) for _ in range(count)]


def test_prefix_end() -> None:
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end("a\xff") == b"a\xc3\xc0"  # UTF-8 of \xff is c3 bf: the last byte is incremented
    assert prefix_end("") == b"\0"


async def test_put_range_delete(client: EtcdClient, prefix: str) -> None:
    first = await client.put(prefix + "a", b"\x00\xffbinary")
    second = await client.put(prefix + "b", b"2")
    await client.put(prefix.rstrip("/") + "0", b"outside the prefix")
    assert second > first

    kvs, revision = await client.range(prefix + "a")
    assert revision >= second
    assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in kvs] == [
        (prefix + "a", b"\x00\xffbinary", first, first, 1, 0)
    ]
    kvs, _ = await client.range(prefix, prefix=True)
    assert [kv.key for kv in kvs] == [prefix + "a", prefix + "b"]
    assert (await client.range(prefix + "missing"))[0] == []

    assert await client.delete(prefix, prefix=True) == 2
    assert (await client.range(prefix, prefix=True))[0] == []
    assert await client.delete(prefix + "a") == 0


async def test_range_all_reads_in_pages_at_one_revision(client: EtcdClient, prefix: str) -> None:
    for i in range(7):
        await client.put(f"{prefix}{i}", f"value {i}".encode())
    await client.put(prefix.rstrip("/") + "0", b"outside the prefix")
    before = client.requests["/v3/kv/range"]
    kvs, revision = await client.range_all(prefix, page=3)
    assert [(kv.key, kv.value) for kv in kvs] == [(f"{prefix}{i}", f"value {i}".encode()) for i in range(7)]
    assert client.requests["/v3/kv/range"] - before == 3  # 3 + 3 + 1 keys
    _, now = await client.range(prefix, prefix=True)
    assert revision == now
    listed, _ = await client.range_all(prefix, page=3, keys_only=True)
    assert [(kv.key, kv.value, kv.mod_revision) for kv in listed] == [(kv.key, b"", kv.mod_revision) for kv in kvs]


async def test_txn_create_if_absent(client: EtcdClient, prefix: str) -> None:
    key = prefix + "lock"
    create = ([Compare.create_revision(key, "=", 0)], [Op.put(key, b"mine"), Op.range(key)], [Op.range(key)])

    won = await client.txn(*create)
    assert won.succeeded
    token = won.responses[1].kvs[0].create_revision
    assert token == won.revision

    lost = await client.txn(*create)
    assert not lost.succeeded
    assert [(kv.value, kv.create_revision) for kv in lost.responses[0].kvs] == [(b"mine", token)]

    fenced = await client.txn([Compare.create_revision(key, "=", token)], [Op.put(prefix + "rec", b"1")])
    stale = await client.txn([Compare.create_revision(key, "=", token - 1)], [Op.put(prefix + "rec", b"2")])
    assert (fenced.succeeded, stale.succeeded) == (True, False)
    assert (await client.range(prefix + "rec"))[0][0].value == b"1"

    by_value = await client.txn([Compare.value(key, "=", b"mine")], [Op.delete(key)])
    assert by_value.succeeded and by_value.responses[0].deleted == 1
    assert not (await client.txn([Compare.value(key, "=", b"mine")], [Op.delete(key)])).succeeded


async def test_lease_grant_keepalive_revoke(client: EtcdClient, prefix: str) -> None:
    lease_id, ttl = await client.lease_grant(5)
    assert lease_id > 0 and ttl == 5
    await client.put(prefix + "bound", b"x", lease=lease_id)
    kvs, _ = await client.range(prefix + "bound")
    assert kvs[0].lease == lease_id
    assert await client.lease_keepalive(lease_id) == 5

    await client.lease_revoke(lease_id)
    assert (await client.range(prefix + "bound"))[0] == []  # revoking deletes the keys bound to the lease
    assert await client.lease_keepalive(lease_id) == 0
    with pytest.raises(EtcdRequestError) as raised:
        await client.lease_revoke(lease_id)
    assert raised.value.code == GRPC_NOT_FOUND and raised.value.status == 404


async def test_lease_expires_without_keepalive(client: EtcdClient, prefix: str) -> None:
    lease_id, _ = await client.lease_grant(1)
    await client.put(prefix + "bound", b"x", lease=lease_id)

    async def gone() -> bool:
        return not (await client.range(prefix + "bound"))[0]

    await wait_for(gone, timeout=3)
    assert await client.lease_keepalive(lease_id) == 0


async def test_request_error_is_not_retried(etcd_cluster: EtcdCluster) -> None:
    async with EtcdClient(etcd_cluster.endpoints) as client:
        with pytest.raises(EtcdRequestError, match="key is not provided") as raised:
            await client.put("", b"x")
        assert (raised.value.status, raised.value.code) == (400, 3)
        assert client.preferred_endpoint == etcd_cluster.endpoints[0]


async def test_watch_history_and_live_events(client: EtcdClient, prefix: str) -> None:
    first = await client.put(prefix + "a", b"1")
    await client.delete(prefix + "a")
    async with aclosing(client.watch(prefix, start_revision=first)) as events:
        history = await next_events(events, 2)
        await client.put(prefix + "b", b"2")
        await client.put(prefix.rstrip("/") + "0", b"outside the prefix")
        await client.put(prefix + "c", b"3")
        live = await next_events(events, 2)
    assert [(e.type, e.kv.key, e.kv.value) for e in history + live] == [
        (EventType.PUT, prefix + "a", b"1"),
        (EventType.DELETE, prefix + "a", b""),
        (EventType.PUT, prefix + "b", b"2"),
        (EventType.PUT, prefix + "c", b"3"),
    ]
    assert history[1].revision == first + 1


async def test_watch_resumes_after_its_member_is_killed(etcd_cluster: EtcdCluster, prefix: str) -> None:
    async with EtcdClient(etcd_cluster.endpoints, request_timeout=0.5, deadline=2.0) as watcher, \
            EtcdClient(etcd_cluster.endpoints[1:], request_timeout=0.5, deadline=2.0) as writer:
        _, now = await writer.range(prefix, prefix=True)
        async with aclosing(watcher.watch(prefix, start_revision=now + 1)) as events:
            await put_retrying(writer, prefix + "0", b"before")
            [before] = await next_events(events, 1)
            assert watcher.preferred_endpoint == etcd_cluster.endpoints[0]  # the stream comes from m0

            etcd_cluster.kill(0)
            written = [await put_retrying(writer, f"{prefix}{i}", str(i).encode()) for i in range(1, 6)]
            after = await next_events(events, 5)
            await put_retrying(writer, prefix + "6", b"6")
            [last] = await next_events(events, 1)
        assert watcher.preferred_endpoint != etcd_cluster.endpoints[0]
    assert before.kv.value == b"before"
    # every write made while the stream moved to another member arrives once, in order
    assert [e.revision for e in after] == written
    assert [e.kv.value for e in after] == [b"1", b"2", b"3", b"4", b"5"]
    assert last.kv.value == b"6"


async def test_watch_reopens_an_idle_stream_without_losing_events(etcd_cluster: EtcdCluster, prefix: str) -> None:
    async with cuttable_proxies(etcd_cluster) as (proxy, *_), \
            EtcdClient([proxy.endpoint], watch_idle_timeout=0.2) as client, aclosing(client.watch(prefix)) as events:
        pending = asyncio.ensure_future(anext(events))
        await wait_for(lambda: proxy.accepted >= 3)  # the stream, then two reopened after idling (a connection each)
        assert not pending.done()
        revision = await client.put(prefix + "k", b"v")
        async with asyncio.timeout(3):
            event = await pending
    assert (event.kv.key, event.revision) == (prefix + "k", revision)


async def test_watch_surfaces_compaction(client: EtcdClient, prefix: str) -> None:
    old = await client.put(prefix + "k", b"1")
    latest = await client.put(prefix + "k", b"2")
    async with aiohttp.ClientSession() as http:
        body = {"revision": str(latest), "physical": True}
        async with http.post(client.preferred_endpoint + "/v3/kv/compaction", json=body) as response:
            assert response.status == 200, await response.text()
    with pytest.raises(EtcdCompacted) as raised:
        async with aclosing(client.watch(prefix, start_revision=old)) as events:
            await next_events(events, 1)
    assert raised.value.compact_revision == latest


async def test_rotates_past_a_dead_and_a_silent_endpoint(etcd_cluster: EtcdCluster, prefix: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # connection refused
    async with silent_server() as silent:
        silent_endpoint = f"http://127.0.0.1:{silent.port}"  # accepts and never answers
        async with EtcdClient([dead, silent_endpoint, *etcd_cluster.endpoints], request_timeout=0.3,
                              deadline=5.0) as client:
            started = time.monotonic()
            await client.put(prefix + "k", b"v")
            first_call = time.monotonic() - started
            assert client.preferred_endpoint == etcd_cluster.endpoints[0]
            started = time.monotonic()
            await client.range(prefix + "k")
            second_call = time.monotonic() - started
    print(f"\nrotation: first call {first_call * 1000:.0f} ms (dead + silent endpoint, 300 ms per endpoint), "
          f"next call {second_call * 1000:.0f} ms")
    assert 0.3 <= first_call < 1.0  # one per-endpoint deadline spent on the silent one, not the overall 5 s
    assert second_call < 0.2  # the last good endpoint is remembered


async def test_no_endpoint_answers_within_the_overall_deadline() -> None:
    async with silent_server() as one, silent_server() as two, silent_server() as three:
        endpoints = [f"http://127.0.0.1:{s.port}" for s in (one, two, three)]
        async with EtcdClient(endpoints, request_timeout=0.3, deadline=0.5) as client:
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable, match="timed out"):
                await client.put("/k", b"v")
            elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 0.9  # the overall deadline cut the second attempt short


async def test_write_without_a_leader_fails_fast(etcd_cluster: EtcdCluster, prefix: str) -> None:
    etcd_cluster.kill(1)
    etcd_cluster.kill(2)
    survivor = etcd_cluster.members[0].endpoint

    async def leaderless() -> bool:  # the survivor steps down once it stops hearing from a quorum
        return (await asyncio.to_thread(etcd_cluster.status, 0))[1] == 0

    await wait_for(leaderless)

    async with EtcdClient(etcd_cluster.endpoints, request_timeout=2.0, deadline=5.0) as client:
        timings = []
        for call in (client.put(prefix + "k", b"v"), client.lease_grant(5), client.range(prefix + "k")):
            started = time.monotonic()
            with pytest.raises(EtcdUnavailable, match="no leader"):
                await call
            timings.append(time.monotonic() - started)

    # the same write without the header waits for a leader: it has not answered after a second
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await http.post(survivor + "/v3/kv/put", json={"key": "L2s=", "value": "dg=="})
        without_header = time.monotonic() - started
    print(f"\nno leader: put {timings[0] * 1000:.1f} ms, lease grant {timings[1] * 1000:.1f} ms, "
          f"range {timings[2] * 1000:.1f} ms (all endpoints tried); without the header: "
          f"no answer after {without_header:.1f} s")
    assert max(timings) < 0.5  # typically 10-20 ms
