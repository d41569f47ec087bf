"""Every key of one cluster as etcd has it, kept by one watch instead of polling.

- **A full read, then a watch.** One range of the whole prefix at revision R, then a watch from R + 1; each
  event is applied as it arrives, so the cache is the store at the revision of the last event seen.
- **A broken watch is resumed.** The client reopens a broken stream from the revision after the last event
  it delivered (`etcd_watch.follow`); when no endpoint accepts a new stream, the watch is opened again after a
  backoff from the revision after the cache's. Nothing is read again, nothing is missed.
- **A compacted watch reads again.** When etcd compacted the revisions to resume from, the events in between
  are gone: a full read replaces the cache and the watch goes on from that read's revision.
- **A safety net.** Every `full_read_every` seconds the watch is closed, every key of the prefix listed with
  its revision (not its value: the value of a key at a given mod revision never changes, so only keys whose
  revision differs from the cache's are fetched) and the watch opened again from there. A key the read finds
  that the watch should have delivered (its mod revision is not after the cache's revision, yet the cache has
  another or none) is counted in `missed` and logged: it never should be.
- Full reads go in pages (500 keys with their values, 2,000 without) at one revision (`EtcdClient.range_all`),
  so thousands of run records never make one answer too big for the call's deadline.

Keys are grouped by their first segment (`views`, `locks`, `runs`, `active`); each group counts its changes
(`version`), so a reader of run records skips its work while only views changed (they are rewritten every few
seconds)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import aclosing
from dataclasses import dataclass

import structlog

from bcd.coordination.etcd import EtcdClient, EtcdCompacted, EtcdError, EventType, KeyValue, WatchEvent

log = structlog.get_logger("bcd.coordination")

FULL_READ_EVERY = 30.0  # seconds between the safety net's full reads
FETCH_AT_MOST = 100  # keys the safety net fetches one by one; beyond that it reads every value again


@dataclass(frozen=True, slots=True)
class Entry:
    """One key as the cache has it, and when it arrived (on the cache's clock)."""

    kv: KeyValue
    received: float


class KeyCache:
    """The keys under `prefix` (relative to it, grouped by first segment), kept by one watch of `client`.

    Run `run()` as a task; `ok` says whether the watch is open (or the last full read succeeded and the watch
    is being opened). `full_reads`, `compactions`, `resumes` and `missed` count what happened, for the log,
    the tests and the bench."""

    def __init__(self, client: EtcdClient, prefix: str, *, full_read_every: float = FULL_READ_EVERY,
                 max_backoff: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if full_read_every <= 0:
            raise ValueError("full_read_every must be positive")
        self._client = client
        self._prefix = prefix
        self.full_read_every = full_read_every
        self._max_backoff = max_backoff
        self._clock = clock
        self._groups: dict[str, dict[str, Entry]] = {}
        self._versions: dict[str, int] = {}
        self.revision = 0  # every change up to this store revision is applied
        self.ok = False
        self._next_full_read = 0.0  # on the event loop's clock
        self.full_reads = 0
        self.compactions = 0
        self.resumes = 0
        self.missed = 0

    # ---- reading

    def group(self, name: str) -> Mapping[str, Entry]:
        """The keys of one group (e.g. "views": vantage -> entry); read-only, changes as events arrive."""
        return self._groups.get(name, {})

    def items(self, exclude: Collection[str] = ()) -> dict[str, bytes]:
        """Relative keys to values, for every group but those in `exclude`."""
        return {f"{name}/{key}": entry.kv.value for name, group in self._groups.items() if name not in exclude
                for key, entry in group.items()}

    def version(self, exclude: Collection[str] = ()) -> int:
        """How many changes the groups (but those in `exclude`) have seen: it grows with each."""
        return sum(count for name, count in self._versions.items() if name not in exclude)

    def group_version(self, name: str) -> int:
        """How many changes the group `name` has seen."""
        return self._versions.get(name, 0)

    # ---- applying

    def _split(self, key: str) -> tuple[str, str]:
        name, _, rest = key.removeprefix(self._prefix).partition("/")
        return name, rest

    def _bump(self, names: Iterable[str]) -> None:
        for name in names:
            self._versions[name] = self._versions.get(name, 0) + 1

    def _apply(self, event: WatchEvent) -> None:
        name, rest = self._split(event.kv.key)
        group = self._groups.setdefault(name, {})
        if event.type is EventType.PUT:
            group[rest] = Entry(event.kv, self._clock())
        elif group.pop(rest, None) is None:
            self.revision = max(self.revision, event.revision)
            return  # a delete of a key we never had: nothing changed here
        self.revision = max(self.revision, event.revision)
        self._bump((name,))

    async def _full_read(self, why: str) -> None:
        """Replace the cache with every key as etcd has it now. The safety net lists the keys without their
        values and fetches only those whose revision differs from the cache's (normally none)."""
        safety_net = why == "safety net"
        listed, revision = await self._client.range_all(self._prefix, keys_only=safety_net,
                                                        page=2000 if safety_net else 500)
        stale = [kv for kv in listed if self._entry(kv.key, kv.mod_revision) is None]
        if safety_net and len(stale) > FETCH_AT_MOST:
            listed, revision = await self._client.range_all(self._prefix)
            safety_net = False
        missed = self._missed(listed)
        now = self._clock()
        groups: dict[str, dict[str, Entry]] = {}
        for kv in listed:
            name, rest = self._split(kv.key)
            entry = self._entry(kv.key, kv.mod_revision)
            if entry is None and safety_net:  # its value now (a newer one is replayed by the watch: no harm)
                found, _ = await self._client.range(kv.key)
                entry = Entry(found[0], now) if found else None
            elif entry is None:
                entry = Entry(kv, now)
            if entry is not None:
                groups.setdefault(name, {})[rest] = entry
        changed = {name for name in set(groups) | set(self._groups)
                   if _revisions(groups.get(name, {})) != _revisions(self._groups.get(name, {}))}
        self._groups, self.revision = groups, revision
        self.full_reads += 1
        self._next_full_read = asyncio.get_running_loop().time() + self.full_read_every
        self.ok = True
        if missed:
            self.missed += len(missed)
            log.warning("cluster_watch_missed_keys", keys=missed[:10], count=len(missed), revision=revision,
                        reason="the safety net's full read found changes the watch had not delivered; repaired")
        report = log.debug if why == "safety net" else log.info  # the safety net's reads are routine
        report("cluster_keys_read", reason=why, revision=revision, keys=len(listed), fetched=len(stale),
               changed=sorted(changed))
        if changed:
            self._bump(changed)

    def _entry(self, key: str, mod_revision: int) -> Entry | None:
        """The cache's entry of `key` if it is at `mod_revision`."""
        name, rest = self._split(key)
        entry = self._groups.get(name, {}).get(rest)
        return entry if entry is not None and entry.kv.mod_revision == mod_revision else None

    def _missed(self, kvs: Iterable[KeyValue]) -> list[str]:
        """Keys a full read has at a revision the cache had reached, which the cache has otherwise (or not at
        all): changes the watch should have delivered. (A key deleted is not told apart from one deleted after
        the cache's revision, so deletions are not counted.)"""
        return [kv.key for kv in kvs
                if kv.mod_revision <= self.revision and self._entry(kv.key, kv.mod_revision) is None]

    def _opened(self, _revision: int) -> None:
        self.ok = True

    # ---- the task

    async def run(self) -> None:
        """Keep the cache until cancelled: a full read first (unless resuming a cache that has one), then the
        watch, resumed or read again as the module docstring says."""
        backoff = 0.1
        why: str | None = "start" if self.full_reads == 0 else None
        while True:
            try:
                if why is not None:
                    await self._full_read(why)
                    why = None
                else:
                    self.resumes += 1
                    log.info("cluster_watch_resumed", resume_from=self.revision + 1)
                await self._watch()
                why, backoff = "safety net", 0.1
                continue
            except EtcdCompacted as exc:
                self.compactions += 1
                log.info("cluster_watch_compacted", resume_from=self.revision + 1, compacted=exc.compact_revision,
                         hint="reading every key again, then watching from there")
                why, backoff = "compacted", 0.1
                continue
            except EtcdError as exc:
                if why == "safety net":  # the watch itself was fine: go on with it, try the net again later
                    log.info("cluster_safety_net_read_failed", reason=str(exc), resume_from=self.revision + 1)
                    self._next_full_read = asyncio.get_running_loop().time() + self.full_read_every
                    why = None
                    continue
                if self.ok:
                    log.warning("cluster_watch_interrupted", reason=str(exc), resume_from=self.revision + 1)
                self.ok = False
            except Exception:  # the one catch-all of this task: log, read again, keep going
                log.exception("cluster_watch_failed")
                self.ok, why = False, "internal error"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _watch(self) -> None:
        """Apply the watch's events, from the revision after the cache's, until the safety net's full read is due
        (then return)."""
        window = asyncio.timeout_at(self._next_full_read)
        try:
            async with window, aclosing(self._client.watch(self._prefix, prefix=True,
                                                           start_revision=self.revision + 1,
                                                           opened=self._opened)) as events:
                async for event in events:
                    self._apply(event)
        except TimeoutError:
            if not window.expired():
                raise


def _revisions(group: Mapping[str, Entry]) -> dict[str, int]:
    return {key: entry.kv.mod_revision for key, entry in group.items()}
