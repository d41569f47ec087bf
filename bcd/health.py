"""The pure per-(service, site) health machine and the per-service status (HAProxy/Nagios semantics).

Everything here is a function of (state, input, now): no I/O, no clock reads, no sleeping. Frozen
dataclasses go in and come out; the caller keeps the latest `SiteHealth` and publishes the `Transition`s.

Per probe, a `ProbeTrack` counts consecutive failures and successes (a `warn` counts as a success) and keeps
the last 21 results for flap detection (there `ok`, `warn` and `fail` are three distinct states).

The site's *base* state (`unknown`, `up`, `degraded`, `down`) after each observation:

- any probe with `fall` consecutive failures → `down`;
- else a probe failing, but fewer than `fall` times: `up` → `degraded` (soft); other states stay;
- else (no probe failing): `up`/`degraded` → `up`; `down`/`unknown` → `up` only once *every* probe has
  `rise` consecutive successes, so probes that have not run yet hold the site where it is.

While a probe leaves its site in doubt (failing fewer than `fall` times, or passing fewer than `rise` times on
a down site), `doubt()` tells the scheduler to run it again after its `fast_interval` rather than its
`interval`: rise and fall keep counting consecutive results, only their spacing changes. A change brought by
such an early run says so in its reason ("… (fast confirmation every 1s)").

Flapping (Nagios percent state change, weighted toward recent results) is an overlay: the site starts
flapping when any probe's percentage exceeds `flap_high`, and stops when every probe is below `flap_low`.
Maintenance (operator-set, with an expiry that `tick()` enforces) overlays both: base and flapping keep
evolving silently underneath. The displayed `state` is maintenance, else flapping, else base; a
`Transition` is returned only when the displayed state changes, and carries the evidence as its reason.

A site restored from the journal keeps its state while fresh probe tracks refill: a restored `down` site that
keeps failing, or a restored `up` site that keeps passing, announces nothing.

`evaluate_service()` judges a service from its active site's health with maintenance looked through
(maintenance is a guard for the decision policy, not a health state); a flapping site never counts as up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from bcd.model import HURRY, SETTLED, SUSPECT, Observation, Result, ServiceStatus, SiteState, Transition

HISTORY = 21
"""Results kept per probe for flap detection (Nagios: the last 21 checks)."""

BASE_STATES = frozenset({SiteState.UNKNOWN, SiteState.UP, SiteState.DEGRADED, SiteState.DOWN})

V = TypeVar("V")


_INDEXES: dict[tuple[str, ...], dict[str, int]] = {}
INDEXES_KEPT = 4096  # distinct key orders remembered (a config has a few: every site with the same probes)


def _index(keys: tuple[str, ...]) -> dict[str, int]:
    """Each key's position: one dict for every map with these keys in this order."""
    index = _INDEXES.get(keys)
    if index is None:
        if len(_INDEXES) >= INDEXES_KEPT:
            _INDEXES.clear()  # the maps made so far keep theirs
        index = _INDEXES[keys] = {key: position for position, key in enumerate(keys)}
    return index


class FrozenMap(Mapping[str, V], Generic[V]):
    """An immutable, hashable mapping that keeps insertion order.

    Kept small, as there is one per site (tens of thousands): the values in a tuple, the keys' positions in a
    dict shared by every map with the same keys in the same order. A dict of its own cost twice as much."""

    __slots__ = ("_index", "_values")

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        if isinstance(items, FrozenMap):
            self._index: dict[str, int] = items._index
            self._values: tuple[V, ...] = items._values
            return
        pairs = dict(items)
        self._index = _index(tuple(pairs))
        self._values = tuple(pairs.values())

    def __getitem__(self, key: str) -> V:
        return self._values[self._index[key]]

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._values)

    def __hash__(self) -> int:
        return hash(frozenset(self._pairs().items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._pairs()!r})"

    def _pairs(self) -> dict[str, V]:
        return dict(zip(self._index, self._values, strict=True))

    def set(self, key: str, value: V) -> FrozenMap[V]:
        """A copy with `key` set to `value`."""
        position = self._index.get(key)
        if position is None:
            return FrozenMap({**self._pairs(), key: value})
        values = list(self._values)
        values[position] = value
        copy: FrozenMap[V] = FrozenMap.__new__(FrozenMap)
        copy._index, copy._values = self._index, tuple(values)
        return copy


def _frozen(owner: object, name: str, items: Mapping[str, V]) -> None:
    if not isinstance(items, FrozenMap):
        object.__setattr__(owner, name, FrozenMap(items))


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Consecutive successes to rise to up, consecutive failures to fall to down."""

    rise: int
    fall: int

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise and fall must be at least 1, got rise={self.rise} fall={self.fall}")


@dataclass(frozen=True, slots=True)
class SiteRules:
    """The probes of one (service, site) with their thresholds, in config order, and the flap thresholds."""

    probes: Mapping[str, Thresholds]
    flap_high: float = 30.0
    flap_low: float = 25.0

    def __post_init__(self) -> None:
        _frozen(self, "probes", self.probes)
        if self.flap_low > self.flap_high:
            raise ValueError(f"flap_low ({self.flap_low:g}) must not exceed flap_high ({self.flap_high:g})")


def percent_state_change(history: Sequence[Result] | str) -> float:
    """Nagios percent state change of up to the last 21 results (oldest first), weighted toward recent.

    A change between results x and x+1 weighs 0.75 + x * 0.5 / 19, so over 21 results the weights sum to 20
    and steady alternation scores 100 %. Rounded to 6 decimals so thresholds compare without float noise.
    """
    recent = history[-HISTORY:]
    changes = sum(0.75 + x * 0.5 / 19 for x in range(len(recent) - 1) if recent[x] != recent[x + 1])
    return round(changes * 100 / 20, 6)


CODES = {Result.OK: "o", Result.WARN: "w", Result.FAIL: "f"}


@dataclass(frozen=True, slots=True)
class ProbeTrack:
    """What one probe has shown lately: run lengths, the last result and the recent history."""

    fails: int = 0
    oks: int = 0
    last: Result | None = None
    reason: str = ""
    at: float | None = None
    history: str = ""  # the last 21 results, oldest first, a letter each (CODES): 70 bytes, a tuple took 224
    percent: float = field(init=False, default=0.0)  # percent state change over `history`, computed once

    def __post_init__(self) -> None:
        if self.history:
            percent = percent_state_change(self.history)
            if percent:  # a steady probe keeps the shared 0.0, not a float of its own
                object.__setattr__(self, "percent", percent)

    def record(self, obs: Observation) -> ProbeTrack:
        """The track after `obs`; a `warn` counts as a success."""
        passed = obs.result is not Result.FAIL
        return ProbeTrack(
            fails=0 if passed else self.fails + 1,
            oks=self.oks + 1 if passed else 0,
            last=obs.result,
            reason=obs.reason,
            at=obs.at,
            history=(self.history + CODES[obs.result])[-HISTORY:],
        )


_NO_TRACKS: FrozenMap[ProbeTrack] = FrozenMap()


@dataclass(frozen=True, slots=True)
class SiteHealth:
    """Health of one service in one site: the base state plus the flapping and maintenance overlays."""

    service: str
    site: str
    base: SiteState = SiteState.UNKNOWN
    flapping: bool = False
    maintenance_until: float | None = None
    maintenance_reason: str = ""
    since: float = 0.0
    reason: str = ""
    probes: Mapping[str, ProbeTrack] = field(default=_NO_TRACKS)

    def __post_init__(self) -> None:
        if self.base not in BASE_STATES:
            raise ValueError(f"base state must be unknown, up, degraded or down, got {self.base!r}")
        _frozen(self, "probes", self.probes)

    @classmethod
    def new(cls, service: str, site: str, now: float) -> SiteHealth:
        """A site nothing is known about yet."""
        return cls(service, site, since=now, reason="no observation yet")

    @classmethod
    def restore(
        cls,
        service: str,
        site: str,
        *,
        base: SiteState | str,
        flapping: bool,
        maintenance_until: float | None,
        maintenance_reason: str,
        since: float,
        reason: str,
    ) -> SiteHealth:
        """A site as persisted, with empty probe tracks; probes then re-confirm it without re-announcing."""
        return cls(service, site, SiteState(base), flapping, maintenance_until, maintenance_reason, since, reason)

    @property
    def effective(self) -> SiteState:
        """The health with maintenance looked through: flapping, else the base state."""
        return SiteState.FLAPPING if self.flapping else self.base

    @property
    def state(self) -> SiteState:
        """The displayed state: maintenance (until `tick()` ends it), else flapping, else the base state."""
        return SiteState.MAINTENANCE if self.maintenance_until is not None else self.effective


# ---------------------------------------------------------------------------------------------------------
# The machine


def observe(health: SiteHealth, obs: Observation, rules: SiteRules) -> tuple[SiteHealth, Transition | None]:
    """Record `obs` and return the new health, plus a transition if the displayed state changed.

    An observation of a probe not in `rules` (e.g. one removed by a reload) is ignored.
    """
    if (obs.key.service, obs.key.site) != (health.service, health.site):
        raise ValueError(f"observation for {obs.key.service}/{obs.key.site} fed to {health.service}/{health.site}")
    name = obs.key.probe
    if name not in rules.probes:
        return health, None
    tracks = FrozenMap(health.probes).set(name, health.probes.get(name, ProbeTrack()).record(obs))
    base, base_reason = _next_base(health.base, tracks, rules, name)
    if obs.early and base is not health.base:  # the change came sooner than the schedule: say so
        base_reason = f"{base_reason} ({obs.early})"
    flapping, flap_reason = _next_flapping(health.flapping, tracks, rules)
    reason = base_reason
    if flapping != health.flapping:
        reason = flap_reason if flapping or base == health.base else f"{flap_reason}; {base_reason}"
    updated = SiteHealth(  # not dataclasses.replace(): this runs for every observation, and costs a third of it
        service=health.service, site=health.site, base=base, flapping=flapping,
        maintenance_until=health.maintenance_until, maintenance_reason=health.maintenance_reason,
        since=health.since, reason=health.reason, probes=tracks,
    )
    return _announce(health, updated, reason, obs.at)


def doubt(health: SiteHealth, probe: str, rules: SiteRules) -> int:
    """What the last observation of `probe` leaves in doubt (`bcd.model`): HURRY while its failures have not yet
    made the site down (fewer than `fall`, the site not down), or while its successes have not yet brought a
    down site back up (fewer than `rise`); plus SUSPECT on its first failure. Else SETTLED: the site is confirmed
    either way, or unknown and passing (a starting estate keeps its normal spacing)."""
    try:  # indexing, not .get(): this runs after every probe run, and Mapping.get costs twice as much
        track = health.probes[probe]
        if not track.fails and health.base is not SiteState.DOWN:
            return SETTLED  # the steady state, decided with one lookup
        limits = rules.probes[probe]
    except KeyError:
        return SETTLED
    if track.fails:
        if track.fails >= limits.fall or health.base is SiteState.DOWN:
            return SETTLED
        return HURRY | SUSPECT if track.fails == 1 else HURRY
    return HURRY if track.oks < limits.rise else SETTLED


def tick(health: SiteHealth, now: float) -> tuple[SiteHealth, Transition | None]:
    """End a maintenance whose expiry has come (`maintenance_until <= now`)."""
    if health.maintenance_until is None or health.maintenance_until > now:
        return health, None
    return _leave_maintenance(health, now, "maintenance ended (expired)")


def start_maintenance(
    health: SiteHealth, until: float, reason: str, now: float
) -> tuple[SiteHealth, Transition | None]:
    """Put the site in maintenance until `until`; extending a running maintenance announces nothing."""
    if until <= now:
        raise ValueError(f"maintenance must end in the future (until={until:g}, now={now:g})")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    new = replace(health, maintenance_until=until, maintenance_reason=reason)
    return _announce(health, new, f"maintenance until {stamp}: {reason or 'no reason given'}", now)


def end_maintenance(
    health: SiteHealth, now: float, reason: str = "maintenance ended by operator"
) -> tuple[SiteHealth, Transition | None]:
    """End the maintenance now; a site not in maintenance is returned unchanged."""
    if health.maintenance_until is None:
        return health, None
    return _leave_maintenance(health, now, reason)


def reconfigure(health: SiteHealth, rules: SiteRules) -> SiteHealth:
    """After a reload: drop the tracks of probes no longer in `rules`, keep everything else untouched."""
    kept = FrozenMap((name, track) for name, track in health.probes.items() if name in rules.probes)
    return replace(health, probes=kept)


def _leave_maintenance(health: SiteHealth, now: float, reason: str) -> tuple[SiteHealth, Transition | None]:
    return _announce(health, replace(health, maintenance_until=None, maintenance_reason=""), reason, now)


def _announce(old: SiteHealth, new: SiteHealth, reason: str, at: float) -> tuple[SiteHealth, Transition | None]:
    if new.state is old.state:
        return new, None
    # `since` never goes back, even if an observation arrives stamped before the last transition
    new = replace(new, since=max(old.since, at), reason=reason)
    return new, Transition(old.service, old.site, old.state, new.state, reason, at)


def _next_base(
    base: SiteState, tracks: Mapping[str, ProbeTrack], rules: SiteRules, observed: str
) -> tuple[SiteState, str]:
    """The base state after an observation of `observed`, and the reason should it have changed."""
    down = _first(tracks, rules, observed, lambda track, limits: track.fails >= limits.fall)
    if down is not None:
        name, track, _ = down
        return SiteState.DOWN, f"{_failures(track.fails, name)}: {track.reason}"
    failing = _first(tracks, rules, observed, lambda track, _: track.fails > 0)
    if failing is not None:
        name, track, limits = failing
        soft = base is SiteState.UP
        reason = f"{name} failing ({track.fails} of {limits.fall}): {track.reason}"
        return (SiteState.DEGRADED if soft else base), reason
    if base in (SiteState.UP, SiteState.DEGRADED):
        return SiteState.UP, f"recovered: {observed} passed"
    if all(tracks.get(name, ProbeTrack()).oks >= t.rise for name, t in rules.probes.items()):
        return SiteState.UP, "all probes passing" if base is SiteState.UNKNOWN else _risen(rules)
    return base, ""


def _first(
    tracks: Mapping[str, ProbeTrack],
    rules: SiteRules,
    observed: str,
    test: Callable[[ProbeTrack, Thresholds], bool],
) -> tuple[str, ProbeTrack, Thresholds] | None:
    """The first probe passing `test`: the one just observed, else in config order."""
    names = [observed, *(name for name in rules.probes if name != observed)]
    for name in names:
        track = tracks.get(name)
        if track is not None and test(track, rules.probes[name]):
            return name, track, rules.probes[name]
    return None


def _failures(count: int, probe: str) -> str:
    return f"1 failure of {probe}" if count == 1 else f"{count} consecutive failures of {probe}"


def _risen(rules: SiteRules) -> str:
    rises = {limits.rise for limits in rules.probes.values()}
    if len(rises) == 1:
        (rise,) = rises
        return "1 success of every probe" if rise == 1 else f"{rise} consecutive successes of every probe"
    each = ", ".join(f"{name} {limits.rise}" for name, limits in rules.probes.items())
    return f"consecutive successes of every probe reached its rise ({each})"


def _next_flapping(flapping: bool, tracks: Mapping[str, ProbeTrack], rules: SiteRules) -> tuple[bool, str]:
    """The flapping flag after an observation, and the reason should it have changed."""
    worst = _most_flapping(tracks, rules.probes)
    if worst is None:
        return flapping, ""
    name, track = worst
    if not flapping and track.percent > rules.flap_high:
        return True, f"flapping: {_changed(name, track)} (threshold {rules.flap_high:g}%)"
    if flapping and track.percent < rules.flap_low:
        return False, f"no longer flapping: {_changed(name, track)} (below {rules.flap_low:g}%)"
    return flapping, ""


def _changed(name: str, track: ProbeTrack) -> str:
    return f"{name} changed state {_pct(track.percent)}% of the last {len(track.history)} checks"


def _most_flapping(
    tracks: Mapping[str, ProbeTrack], names: Iterable[str] | None = None
) -> tuple[str, ProbeTrack] | None:
    """The probe with the highest percent state change (the first one on a tie), among `names` if given."""
    candidates = [(name, tracks[name]) for name in (tracks if names is None else names) if name in tracks]
    return max(candidates, key=lambda item: item[1].percent, default=None)


def _pct(value: float) -> str:
    return f"{round(value, 1):g}"


# ---------------------------------------------------------------------------------------------------------
# Per service


def best_standby(active: str, sites: Mapping[str, SiteHealth]) -> str | None:
    """The first site other than `active`, in the mapping's order, that is up (maintenance looked through)."""
    return next((name for name, site in sites.items() if name != active and site.effective is SiteState.UP), None)


def evaluate_service(active: str, sites: Mapping[str, SiteHealth]) -> tuple[ServiceStatus, str]:
    """The status of a service and one sentence saying why, from the health of its sites.

    Maintenance is looked through (it is a guard for the decision policy); a flapping site is never up.
    """
    if active not in sites:
        raise ValueError(f"active site {active!r} is not among the sites {sorted(sites)}")
    site = sites[active]
    head = f"{site.service}: active site {active}"
    state = site.effective
    if state is SiteState.UP:
        return ServiceStatus.OK, f"{head} up"
    if state is SiteState.UNKNOWN:
        return ServiceStatus.UNKNOWN, f"{head} unknown ({site.reason or 'no verdict from its probes yet'})"
    if state is not SiteState.DOWN:
        return ServiceStatus.AT_RISK, f"{head} {state} ({evidence(site)})"
    standby = best_standby(active, sites)
    if standby is not None:
        return ServiceStatus.FAILOVER_NEEDED, f"{head} down ({evidence(site)}); standby {standby} up"
    each = ", ".join(f"{name} {other.effective}" for name, other in sites.items())
    return ServiceStatus.UNAVAILABLE, f"{site.service}: no site up: {each}"


def evidence(site: SiteHealth) -> str:
    """Why a site is not up, from its probe tracks; the last transition's reason if they show nothing."""
    if site.flapping:
        worst = _most_flapping(site.probes)
        if worst is not None and worst[1].percent > 0:
            name, track = worst
            return _changed(name, track)
    failing = [(name, track) for name, track in site.probes.items() if track.fails > 0]
    if failing:
        name, track = max(failing, key=lambda item: item[1].fails)
        return f"{_failures(track.fails, name)}: {track.reason}"
    return site.reason
