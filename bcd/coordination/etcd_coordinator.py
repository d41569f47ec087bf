"""Coordination through etcd: one lease per instance, run locks bound to it, views published under it.

- **Lease.** start() grants one lease of `lease_ttl` seconds; a background task keeps it alive every
  `keepalive` seconds (default TTL/3; retrying sooner after a failure). The lease is known valid until the send
  time of the last successful keepalive (or of the grant) plus the TTL etcd returned, on our monotonic clock:
  etcd starts counting the TTL when it receives the keepalive, which is after we sent it, so our idea of
  validity always ends first.
- **Locks.** `locks/<service>` is created in a transaction only if absent (create_revision == 0), bound to the
  lease; its create revision is the fencing token. A lock is valid exactly as long as the lease. When validity
  passes without a successful keepalive, or etcd says the lease expired, every lock is lost: it ends,
  `on_lost(service)` is called, the old lease is revoked as soon as etcd answers (its keys may still exist) and
  a new lease is granted.
- **Views.** Our view is written at `views/<vantage>` bound to the lease, and written again under each new
  lease; beat() writes `beats/<vantage>` (the view's revision, same lease), which makes a view as fresh in
  views() as a write without sending it again. acquire() may be given the revisions of the views a decision
  counted: the lock is then created only if none of them has changed since (the same transaction compares
  their mod revisions), else ViewsChanged.
- **One watch, no polling.** Every key of the cluster (views, locks, run records, active sites) is kept by
  one watch of the whole prefix (`KeyCache`, etcd_cache.py): a full read at start, after a compaction and
  every `full_read_every` seconds as a safety net; a broken watch is resumed from the revision after the last
  event seen. views() and records() answer from it, without a request.
- **Fenced writes** (fenced_put, fenced_delete) are transactions conditional on the lock key's create revision
  still being the lock's token.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import suppress

import structlog

from bcd.coordination.base import CoordinationUnavailable, Keys, Lock, ViewsChanged
from bcd.coordination.etcd import (
    GRPC_NOT_FOUND,
    Compare,
    EtcdClient,
    EtcdError,
    EtcdRequestError,
    KeyValue,
    Op,
    OpResult,
    prefix_end,
)
from bcd.coordination.etcd_cache import FULL_READ_EVERY, KeyCache

log = structlog.get_logger("bcd.coordination")
NOT_RECORDS = ("views", "beats", "bookings")  # groups that are no run records, locks or active sites

MAX_TXN_OPS = 100  # etcd refuses a transaction of more than --max-txn-ops operations (128 by default)


class EtcdCoordinator:
    """The Coordinator of one bcd instance (`vantage`) in cluster `cluster`, over `client` (not closed here).

    `on_lost(service)` is called (from the event loop, synchronously) when a held lock is lost without
    release(); by then the Lock has ended, and its valid_until says when its validity ran out. `clock` is the
    monotonic clock locks are measured on.
    """

    def __init__(
        self,
        client: EtcdClient,
        *,
        cluster: str,
        vantage: str,
        lease_ttl: float = 10.0,
        keepalive: float | None = None,
        on_lost: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        full_read_every: float = FULL_READ_EVERY,
    ) -> None:
        self._client = client
        self._keys = Keys(cluster)
        self._view_key = self._keys.view(vantage)
        self._beat_key = self._keys.beat(vantage)
        self.vantage = vantage
        self._requested_ttl = max(1, math.ceil(lease_ttl))
        self._keepalive_every = keepalive  # None: a third of the TTL granted
        self._on_lost = on_lost
        self._clock = clock

        self._lease_id = 0
        self._ttl = self._requested_ttl
        self._valid_until = -math.inf
        self._expiry: asyncio.TimerHandle | None = None
        self._stale_leases: set[int] = set()  # dropped leases to revoke: their keys may still exist

        self._held: dict[str, Lock] = {}
        self._pending_release: dict[str, int] = {}  # service -> token, releases etcd has not confirmed

        self._view: bytes | None = None  # what we want published
        self._published: tuple[int, bytes] | None = None  # (lease, value) etcd has, as far as we know
        self._view_revision = 0  # the store revision of that publication (what a beat names)
        self._view_sync = asyncio.Lock()
        self.keys = KeyCache(client, self._keys.prefix, full_read_every=full_read_every,
                             max_backoff=max(1.0, self._requested_ttl / 3), clock=clock)

        self._healthy = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._keys_task: asyncio.Task[None] | None = None

    # ---- state

    @property
    def available(self) -> bool:
        return (self._healthy and self.keys.ok and self._lease_id != 0
                and self._clock() < self._valid_until)

    @property
    def lease_id(self) -> int:
        """The current lease (0 while there is none)."""
        return self._lease_id

    def views(self) -> dict[str, tuple[bytes, float]]:
        now, beats = self._clock(), self.keys.group("beats")
        found = {}
        for vantage, entry in self.keys.group("views").items():
            received, beat = entry.received, beats.get(vantage)
            if beat is not None and beat.kv.value == b"%d" % entry.kv.mod_revision:  # a beat for this very view
                received = max(received, beat.received)
            found[vantage] = (entry.kv.value, max(0.0, now - received))
        return found

    def view_revisions(self) -> dict[str, int]:
        return {vantage: entry.kv.mod_revision for vantage, entry in self.keys.group("views").items()}

    def views_revision(self) -> int:
        return self.keys.revision

    def records(self) -> dict[str, bytes]:
        return self.keys.items(exclude=NOT_RECORDS)

    @property
    def records_version(self) -> int:
        return self.keys.version(exclude=NOT_RECORDS)

    def entries(self, group: str) -> dict[str, tuple[bytes, int]]:
        return {key: (entry.kv.value, entry.kv.mod_revision) for key, entry in self.keys.group(group).items()}

    def entries_version(self, group: str) -> int:
        return self.keys.group_version(group)

    def _set_healthy(self, healthy: bool, reason: str = "") -> None:
        if healthy and not self._healthy:
            log.info("coordination available", vantage=self.vantage, lease=self._lease_id)
            if self._keys_task is not None and not self._stopping:
                # the watch stream may be stalled behind the outage that just ended (a partition drops packets
                # and closes nothing): resume it now rather than wait for the stream's idle timeout
                self._keys_task.cancel()
                self.keys.ok = False
                self._keys_task = self._spawn(self.keys.run(), "coordination-keys")
        elif not healthy and self._healthy:
            log.warning("coordination unavailable", vantage=self.vantage, reason=reason)
        self._healthy = healthy

    # ---- lifecycle

    async def start(self) -> None:
        self._stopping = False
        try:
            await self._grant()
        except EtcdError as exc:
            self._set_healthy(False, str(exc))
            log.warning("coordination lease not granted yet", vantage=self.vantage, reason=str(exc))
        self._spawn(self._maintain(), "coordination-lease")
        self._keys_task = self._spawn(self.keys.run(), "coordination-keys")

    def _spawn(self, work: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._keys_task = None
        if self._expiry is not None:
            self._expiry.cancel()
        now = self._clock()
        for lock in self._held.values():
            lock.end(now)
        self._held.clear()
        self._pending_release.clear()
        leases = {*self._stale_leases, self._lease_id} - {0}
        self._lease_id, self._valid_until, self._published = 0, -math.inf, None
        for lease_id in leases:  # revoking deletes our locks and our view at once
            try:
                await self._client.lease_revoke(lease_id)
            except EtcdError as exc:
                log.warning("coordination lease not revoked; it expires on its own", lease=lease_id, reason=str(exc))
        self._stale_leases.clear()
        self._healthy = False
        self.keys.ok = False

    # ---- lease

    def _set_validity(self, until: float) -> None:
        self._valid_until = until
        for lock in self._held.values():
            lock.extend(until)
        if self._expiry is not None:
            self._expiry.cancel()
        lease_id = self._lease_id
        delay = max(0.0, until - self._clock())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expire, lease_id)

    def _expire(self, lease_id: int) -> None:
        if lease_id != self._lease_id:
            return
        left = self._valid_until - self._clock()
        if left > 0:  # uvloop's timers may fire a little early: come back when the validity really ends
            self._expiry = asyncio.get_running_loop().call_later(left + 0.001, self._expire, lease_id)
            return
        self._lose("no successful keepalive within the lease TTL")

    def _lose(self, reason: str) -> None:
        """Drop the lease: every lock goes (invalid first, then on_lost), and a new lease is asked for."""
        if self._lease_id:
            self._stale_leases.add(self._lease_id)
        log.warning("coordination lease lost", vantage=self.vantage, lease=self._lease_id, reason=reason)
        self._lease_id, self._valid_until, self._published = 0, -math.inf, None
        self._pending_release.clear()  # those keys belong to the old lease, which is revoked or expires
        self._set_healthy(False, reason)
        lost, self._held = list(self._held.values()), {}
        now = self._clock()
        for lock in lost:
            lock.end(now)  # valid_until keeps when validity ran out, if that was before now
        for lock in lost:
            log.warning("lost_lock", service=lock.service, token=lock.token, reason=reason)
            if self._on_lost is not None:
                try:
                    self._on_lost(lock.service)
                except Exception:
                    log.exception("on_lost callback failed", service=lock.service)
        self._wake.set()

    async def _grant(self) -> None:
        sent = self._clock()
        lease_id, ttl = await self._client.lease_grant(self._requested_ttl)
        if self._stopping:
            self._stale_leases.add(lease_id)
            return
        self._lease_id, self._ttl = lease_id, max(ttl, 1)
        self._set_validity(sent + ttl)
        self._set_healthy(True)
        log.info("coordination lease granted", vantage=self.vantage, lease=lease_id, ttl=ttl)

    async def _keepalive(self) -> None:
        lease_id = self._lease_id
        sent = self._clock()
        try:
            ttl = await self._client.lease_keepalive(lease_id)
        except EtcdError as exc:
            self._set_healthy(False, str(exc))
            return
        if lease_id != self._lease_id:
            return  # lost while the call was out: the old lease is revoked by the next tick
        if ttl <= 0:
            self._lose("etcd says the lease expired")
            return
        self._set_validity(sent + ttl)
        self._set_healthy(True)

    async def _tick(self) -> None:
        if self._lease_id == 0:
            try:
                await self._grant()
            except EtcdError as exc:
                self._set_healthy(False, str(exc))
                return
        else:
            await self._keepalive()
        if not self._healthy:
            return
        for lease_id in list(self._stale_leases):
            try:
                await self._client.lease_revoke(lease_id)
            except EtcdRequestError as exc:
                if exc.code != GRPC_NOT_FOUND:
                    raise
            self._stale_leases.discard(lease_id)
        for service, token in list(self._pending_release.items()):
            await self._delete_lock(service, token)
            self._pending_release.pop(service, None)
        await self._sync_view()

    async def _maintain(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._tick()
            except EtcdError as exc:
                self._set_healthy(False, str(exc))
            except Exception:  # the one catch-all of this task: log, keep the lease loop alive
                log.exception("coordination lease loop failed")
                self._set_healthy(False, "internal error")
            every = self._keepalive_every if self._keepalive_every is not None else self._ttl / 3
            delay = every if self._healthy else max(0.05, self._ttl / 10)
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _require_lease(self) -> int:
        if self._stopping or self._lease_id == 0 or self._clock() >= self._valid_until:
            raise CoordinationUnavailable("no valid etcd lease")
        return self._lease_id

    # ---- locks

    async def acquire(self, service: str, views: Mapping[str, int] | None = None, seen_at: int = 0) -> Lock | None:
        key = self._keys.lock(service)
        if service in self._held:
            return None
        lease_id = self._require_lease()
        counted = sorted((views or {}).items())
        try:
            if service in self._pending_release:
                await self._delete_lock(service, self._pending_release.pop(service))
            holder = json.dumps({"vantage": self.vantage, "lease": str(lease_id)}).encode()
            unchanged = [Compare.mod_revision(self._keys.view(vantage), "=", revision) for vantage, revision in counted]
            now_at = [Op.range(self._keys.view(vantage)) for vantage, _ in counted]
            result = await self._client.txn(
                [Compare.create_revision(key, "=", 0), *unchanged, *self._no_view_since(seen_at)],
                [Op.put(key, holder, lease_id), Op.range(key)],
                [*now_at, Op.range(self._keys.views, prefix=True), Op.range(key)],
            )
        except EtcdError as exc:
            self._set_healthy(False, str(exc))
            raise CoordinationUnavailable(f"cannot take the lock of {service}: {exc}") from exc
        if lease_id != self._lease_id:
            raise CoordinationUnavailable(f"the lease was lost while taking the lock of {service}")
        found = result.responses[-1].kvs if result.responses else ()
        if not found and not result.succeeded and (counted or seen_at):  # the lock is free: the views changed
            written = [kv for kv in result.responses[-2].kvs if kv.key != self._keys.view(self.vantage)]
            raise ViewsChanged(_changed(counted, result.responses[:-2], written, seen_at), result.revision)
        if not found:
            raise CoordinationUnavailable(f"the lock key of {service} vanished inside a transaction")
        current = found[0]
        # a failed compare on a key bound to our own lease: an earlier attempt of ours succeeded but its
        # answer was lost on the way (the client tried another endpoint); the lock is ours all the same
        if not result.succeeded and current.lease != lease_id:
            return None
        if service in self._held:  # a concurrent acquire() of ours got there first
            return None
        lock = Lock(service, current.create_revision, self._valid_until)
        self._held[service] = lock
        log.info("lock acquired", service=service, token=lock.token, vantage=self.vantage)
        return lock

    def _no_view_since(self, seen_at: int) -> list[Compare]:
        """No other vantage's view written after revision `seen_at` (none when it is 0): the views' range on
        both sides of ours."""
        if seen_at <= 0:
            return []
        ours = self._keys.view(self.vantage)
        return [Compare.mod_revisions(self._keys.views, ours.encode(), "<", seen_at + 1),
                Compare.mod_revisions(ours + "\0", prefix_end(self._keys.views), "<", seen_at + 1)]

    async def _delete_lock(self, service: str, token: int) -> None:
        key = self._keys.lock(service)
        await self._client.txn([Compare.create_revision(key, "=", token)], [Op.delete(key)])

    async def release(self, lock: Lock) -> None:
        held = self._held.get(lock.service)
        lock.end(self._clock())
        if held is not lock:
            return
        del self._held[lock.service]
        try:
            await self._delete_lock(lock.service, lock.token)
        except EtcdError as exc:
            self._set_healthy(False, str(exc))
            self._pending_release[lock.service] = lock.token  # retried by the lease loop
            log.warning("lock release not confirmed; retrying", service=lock.service, reason=str(exc))
            return
        log.info("lock released", service=lock.service, token=lock.token, vantage=self.vantage)

    async def fenced_put(self, lock: Lock, key: str, value: bytes) -> bool:
        return await self._fenced(lock, [Op.put(self._keys.absolute(key), value)], key)

    async def fenced_delete(self, lock: Lock, keys: Sequence[str]) -> bool:
        targets = [self._keys.absolute(key) for key in keys]
        for start in range(0, len(targets), MAX_TXN_OPS):
            batch = targets[start:start + MAX_TXN_OPS]
            if not await self._fenced(lock, [Op.delete(target) for target in batch], f"{len(batch)} keys"):
                return False
        return True

    async def _fenced(self, lock: Lock, ops: list[Op], what: str) -> bool:
        """Run `ops` only if `lock` is valid and its key still has the lock's token as create revision."""
        if self._held.get(lock.service) is not lock or not lock.valid(self._clock()):
            return False
        lock_key = self._keys.lock(lock.service)
        try:
            result = await self._client.txn([Compare.create_revision(lock_key, "=", lock.token)], ops)
        except EtcdError as exc:
            self._set_healthy(False, str(exc))
            raise CoordinationUnavailable(f"cannot write {what}: {exc}") from exc
        if not result.succeeded and self._held.get(lock.service) is lock:
            # the lock key is gone or someone else's: we are no longer the holder, whatever our lease says
            del self._held[lock.service]
            lock.end(self._clock())
            log.warning("lost_lock", service=lock.service, token=lock.token, reason="fenced write refused")
            if self._on_lost is not None:
                self._on_lost(lock.service)
        return result.succeeded

    async def swap(self, key: str, value: bytes, revision: int) -> bool:
        target = self._keys.absolute(key)
        try:
            result = await self._client.txn([Compare.mod_revision(target, "=", revision)], [Op.put(target, value)],
                                            [Op.range(target)])
        except EtcdError as exc:
            raise CoordinationUnavailable(f"cannot write {key}: {exc}") from exc
        found = result.responses[0].kvs if not result.succeeded and result.responses else ()
        # a failed compare on a key holding exactly our value: an earlier attempt of ours succeeded but its answer
        # was lost on the way (the client tried another endpoint)
        return result.succeeded or (bool(found) and found[0].value == value)

    async def remove(self, key: str, revision: int) -> bool:
        target = self._keys.absolute(key)
        try:
            result = await self._client.txn([Compare.mod_revision(target, "=", revision)], [Op.delete(target)])
        except EtcdError as exc:
            raise CoordinationUnavailable(f"cannot delete {key}: {exc}") from exc
        return result.succeeded

    async def read(self, prefix: str) -> dict[str, bytes]:
        try:
            kvs, _ = await self._client.range(self._keys.absolute(prefix) if prefix else self._keys.prefix,
                                              prefix=True)
        except EtcdError as exc:
            self._set_healthy(False, str(exc))
            raise CoordinationUnavailable(f"cannot read {prefix}: {exc}") from exc
        return {kv.key.removeprefix(self._keys.prefix): kv.value for kv in kvs}

    # ---- views

    async def publish_view(self, view_json: bytes) -> None:
        """Publish now if etcd answers, else as soon as it does (this never raises for etcd being down)."""
        self._view = view_json
        await self._sync_view()

    async def withdraw_view(self) -> None:
        self._view = None
        await self._sync_view()

    async def _sync_view(self) -> None:
        """Make etcd hold our wanted view under the current lease (or nothing); errors leave it for the loop."""
        async with self._view_sync:
            lease_id, view = self._lease_id, self._view
            try:
                if view is None and self._published is not None:
                    await self._client.delete(self._view_key)
                    self._published = None
                elif view is not None and lease_id and self._published != (lease_id, view):
                    revision = await self._client.put(self._view_key, view, lease=lease_id)
                    if lease_id == self._lease_id:
                        self._published, self._view_revision = (lease_id, view), revision
            except EtcdError as exc:
                self._set_healthy(False, str(exc))

    async def beat(self) -> None:
        async with self._view_sync:
            lease_id, published = self._lease_id, self._published
            if not lease_id or published is None or published[0] != lease_id or published[1] != self._view:
                return  # not published as wanted under this lease: `_sync_view` does that (the lease loop)
            try:
                await self._client.put(self._beat_key, b"%d" % self._view_revision, lease=lease_id)
            except EtcdError as exc:
                self._set_healthy(False, str(exc))


def _changed(counted: Sequence[tuple[str, int]], found: Sequence[OpResult], written: Sequence[KeyValue],
             seen_at: int) -> str:
    """Which views changed since they were read: the counted ones, from the failure branch's ranges of their
    keys, and any other vantage's written after revision `seen_at`."""
    changes = []
    for (vantage, revision), result in zip(counted, found, strict=True):
        now = result.kvs[0].mod_revision if result.kvs else 0
        if now != revision:
            changes.append(f"{vantage} (revision {revision} -> {now or 'gone'})")
    shown = {vantage for vantage, _ in counted}
    changes += [f"{kv.key.rsplit('/', 1)[-1]} (written at revision {kv.mod_revision}, not counted)" for kv in written
                if seen_at and kv.mod_revision > seen_at and kv.key.rsplit("/", 1)[-1] not in shown]
    return "the views counted changed since they were read: " + (", ".join(changes) or "(none seen changed)")
