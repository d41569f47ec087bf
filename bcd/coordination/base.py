"""What bcd needs from coordination, whichever store provides it.

`EtcdCoordinator` (one instance per site sharing an etcd cluster) satisfies `Coordinator`; tests may give the
cluster link another implementation of the same protocol.

Keys live under `/bcd/<cluster>/`:
- `views/<vantage>`           one instance's view of every service and site, bound to that instance's lease
- `locks/<service>`           the run lock; its create revision is the fencing token
- `runs/<service>/<run_id>`   run records, written fenced by the lock holder
- `active/<service>`          the active site, written fenced by the lock holder at the end of a run
- `bookings/<id>`             booked maintenance windows and runs (bcd.bookings), changed by compare-and-swap
Callers name keys relative to the cluster prefix (`run_key()`, `active_key()`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class CoordinationError(Exception):
    """Base of the errors a coordinator raises."""


class CoordinationUnavailable(CoordinationError):
    """The store cannot be reached, or our lease is not known to be valid: nobody can say who holds what,
    so nothing that needs the lock may start."""


class ViewsChanged(CoordinationError):
    """A view counted for a decision changed (or went) in the store after it was read, or another vantage's view
    was written since (one that was absent, or too old to count): the lock was not taken; decide again with the
    views as they are once `views_revision()` has reached `revision` (the store's when the lock was refused)."""

    def __init__(self, message: str, revision: int = 0) -> None:
        super().__init__(message)
        self.revision = revision


def _component(name: str, what: str) -> str:
    if not name or "/" in name or name in {".", ".."}:
        raise ValueError(f"{what} {name!r} cannot be part of a coordination key")
    return name


def run_key(service: str, run_id: str) -> str:
    """The relative key of a run record."""
    return f"runs/{_component(service, 'service')}/{_component(run_id, 'run id')}"


def active_key(service: str) -> str:
    """The relative key holding a service's active site."""
    return f"active/{_component(service, 'service')}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Absolute keys of one cluster."""

    cluster: str

    def __post_init__(self) -> None:
        _component(self.cluster, "cluster name")

    @property
    def prefix(self) -> str:
        return f"/bcd/{self.cluster}/"

    @property
    def views(self) -> str:
        return self.prefix + "views/"

    def view(self, vantage: str) -> str:
        return self.views + _component(vantage, "vantage")

    def beat(self, vantage: str) -> str:
        return f"{self.prefix}beats/{_component(vantage, 'vantage')}"

    def lock(self, service: str) -> str:
        return f"{self.prefix}locks/{_component(service, 'service')}"

    def absolute(self, relative: str) -> str:
        if not relative or relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"{relative!r} is not a relative coordination key")
        return self.prefix + relative


class Lock:
    """A held run lock. `token` is the fencing token: it only grows from one holder to the next, so a
    downstream system that remembers the highest token it saw can refuse a stale executor.

    `valid_until` is a time on the coordinator's monotonic clock. It moves forward while the holder's lease is
    kept alive; once the lock is released or lost it stays where validity ended. A holder must stop acting once
    `valid(now)` is false, whatever it believes. Only the coordinator that issued the lock calls
    extend()/end().
    """

    __slots__ = ("_ended", "_service", "_token", "_valid_until")

    def __init__(self, service: str, token: int, valid_until: float) -> None:
        self._service = service
        self._token = token
        self._valid_until = valid_until
        self._ended = False

    @property
    def service(self) -> str:
        return self._service

    @property
    def token(self) -> int:
        return self._token

    @property
    def valid_until(self) -> float:
        return self._valid_until

    def valid(self, now: float) -> bool:
        return not self._ended and now < self._valid_until

    def remaining(self, now: float) -> float:
        """Seconds of validity left at `now` (0 once no longer valid)."""
        return max(0.0, self._valid_until - now) if self.valid(now) else 0.0

    def extend(self, until: float) -> None:
        """Move validity forward to `until` (never backward, never after end())."""
        if not self._ended and until > self._valid_until:
            self._valid_until = until

    def end(self, now: float | None = None) -> None:
        """The lock is no longer held: from `now` (released, refused) or from when its validity ran out."""
        self._ended = True
        if now is not None:
            self._valid_until = min(self._valid_until, now)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "held"
        return f"Lock(service={self._service!r}, token={self._token}, valid_until={self._valid_until:.3f}, {state})"


class Coordinator(Protocol):
    """Exclusive run locks with fencing tokens, fenced records, and the vantages' views."""

    @property
    def available(self) -> bool:
        """Whether the store answers and our lease is valid; automatic action needs it."""
        ...

    async def start(self) -> None:
        """Begin (lease, keepalive, watches). Never raises because the store is down: `available` says."""
        ...

    async def stop(self) -> None:
        """Release everything we hold (locks, our view) and stop the background work."""
        ...

    async def acquire(self, service: str, views: Mapping[str, int] | None = None, seen_at: int = 0) -> Lock | None:
        """The service's run lock, or None when someone (this instance included) holds it.

        `views` (vantage -> the revision `view_revisions()` gave when the view was read): the lock is taken only
        if each of those views is still at that revision, in the same transaction; ViewsChanged otherwise.
        `seen_at` (`views_revision()` when they were read): nor may another vantage's view have been written
        after it (one absent then, or too old to count, may have changed the outcome). Raises
        CoordinationUnavailable when that cannot be decided."""
        ...

    async def release(self, lock: Lock) -> None:
        """Give the lock up (a no-op for a lock no longer held). The lock is invalid from now on."""
        ...

    async def fenced_put(self, lock: Lock, key: str, value: bytes) -> bool:
        """Write `value` at the relative `key` only if `lock` is still valid and still the current holder's
        (its token is the lock key's create revision). False when the fence refused the write; raises
        CoordinationUnavailable when the store could not be asked."""
        ...

    async def fenced_delete(self, lock: Lock, keys: Sequence[str]) -> bool:
        """Delete the relative `keys` only if `lock` is still valid and the current holder's, as fenced_put()."""
        ...

    async def read(self, prefix: str) -> dict[str, bytes]:
        """Every key under the relative `prefix` (e.g. "runs/web/"; "" for every key of the cluster, read at
        one revision), relative keys to values."""
        ...

    async def publish_view(self, view_json: bytes) -> None:
        """Publish our view; it lives as long as our lease (it is published again under a new lease)."""
        ...

    async def withdraw_view(self) -> None:
        """Remove our view (e.g. when we suspect our own network); publish_view() brings it back."""
        ...

    async def beat(self) -> None:
        """Say that our published view still holds without writing it again: a small key under our lease naming
        the view's revision, which makes the view as fresh as a publication to those who read beats."""
        ...

    def views(self) -> dict[str, tuple[bytes, float]]:
        """Live views by vantage (ours included): (the view, seconds since it was last written or beat for)."""
        ...

    def views_revision(self) -> int:
        """The store revision up to which views() has every change (0: no store)."""
        ...

    def view_revisions(self) -> dict[str, int]:
        """The store revision of each live view as views() has it, by vantage (for acquire(views=...));
        empty when the store has no revisions (a lone instance's only view is its own)."""
        ...

    def records(self) -> dict[str, bytes]:
        """Every key of the cluster but the views, beats and bookings (locks, run records, active sites), relative keys
        to values, as the store's watch has them now (no request is made)."""
        ...

    def entries(self, group: str) -> dict[str, tuple[bytes, int]]:
        """The keys of one group (e.g. "bookings"), relative to it, as (value, mod revision), as the store's watch
        has them now (no request is made)."""
        ...

    def entries_version(self, group: str) -> int:
        """Grows with every change to entries(group)."""
        ...

    async def swap(self, key: str, value: bytes, revision: int) -> bool:
        """Put `value` at the relative `key` (bound to no lease, fenced by no lock) only if the key's mod revision
        is still `revision` (0: only if absent). False when it changed meanwhile; raises CoordinationUnavailable
        when the store could not be asked."""
        ...

    async def remove(self, key: str, revision: int) -> bool:
        """Delete the relative `key` only if its mod revision is still `revision`. False when it changed or went
        meanwhile; raises CoordinationUnavailable when the store could not be asked."""
        ...

    @property
    def records_version(self) -> int:
        """Grows with every change to records() (views do not count)."""
        ...
