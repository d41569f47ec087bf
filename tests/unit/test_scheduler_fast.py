"""Fast confirmation and site re-probes in the scheduler, on a fake clock (tests/helpers/virtual_time.py): the
real scheduler and the real health machine, with stand-in probes whose targets die and come back at given
times. Every spacing is exact, whatever the machine's load."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest

from bcd import health
from bcd.health import SiteHealth, SiteRules, Thresholds
from bcd.model import Observation, ProbeKey, ProbeResult, Result, SiteState, Transition
from bcd.probes.base import Probe
from bcd.scheduler import Job, Scheduler, spread_offset
from tests.helpers.virtual_time import run

RULES = SiteRules({"health": Thresholds(rise=2, fall=3)})


class Target:
    """A stand-in probe of a target that is down during `outages` ((from, until) in loop time); each run takes
    `takes` seconds."""

    def __init__(self, outages: Iterable[tuple[float, float]] = (), takes: float = 0.0) -> None:
        self.outages = list(outages)
        self.takes = takes
        self.starts: list[float] = []
        self.running = 0
        self.most_running = 0

    async def run(self) -> ProbeResult:
        now = asyncio.get_running_loop().time()
        self.starts.append(now)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.takes:
                await asyncio.sleep(self.takes)
        finally:
            self.running -= 1
        if any(begin <= now < end for begin, end in self.outages):
            return ProbeResult(Result.FAIL, self.takes, "connection refused")
        return ProbeResult(Result.OK, self.takes, "HTTP 200")


class Estate:
    """The sink: the real health machine per (service, site), as the engine applies it."""

    def __init__(self) -> None:
        self.sites: dict[tuple[str, str], SiteHealth] = {}
        self.transitions: list[tuple[float, Transition]] = []
        self.observations: list[Observation] = []

    def __call__(self, obs: Observation) -> int:
        self.observations.append(obs)
        key = (obs.key.service, obs.key.site)
        current = self.sites.get(key) or SiteHealth.restore(
            key[0], key[1], base=SiteState.UP, flapping=False, maintenance_until=None, maintenance_reason="",
            since=0.0, reason="restored")
        updated, transition = health.observe(current, obs, RULES)
        self.sites[key] = updated
        if transition is not None:
            self.transitions.append((asyncio.get_running_loop().time(), transition))
        return health.doubt(updated, obs.key.probe, RULES)


def job(service: str, interval: float = 10.0, fast: float | None = 1.0, site: str = "dorset") -> Job:
    return Job(ProbeKey(service, site, "health"), interval, 0.5, b"v1", fast)


async def scenario(jobs: list[Job], targets: dict[str, Probe], until: float, max_concurrency: int = 100,
                   bursts: tuple[int, float, float] = (0, 2.0, 1.0)) -> tuple[Scheduler, Estate]:
    from bcd.config.models import BurstRules

    estate = Estate()
    scheduler = Scheduler(estate, max_concurrency=max_concurrency)
    scheduler.sync(jobs, lambda j: targets[j.key.service], BurstRules(*bursts))
    await asyncio.sleep(until)
    await scheduler.stop()
    return scheduler, estate


def changes(estate: Estate) -> list[tuple[float, SiteState]]:
    """(when, to which state) of each transition, times rounded to the microsecond (the fake clock adds floats)."""
    return [(round(at, 6), t.to_state) for at, t in estate.transitions]


def grid(service: str, interval: float = 10.0) -> float:
    return spread_offset(ProbeKey(service, "dorset", "health"), interval)


def test_a_failure_is_confirmed_every_fast_interval_then_the_normal_spacing_returns() -> None:
    offset = round(grid("payroll"), 6)
    dies = offset + 20.5  # mid-interval: the run at offset + 30 is the first to fail
    target = Target([(dies, 1e9)])
    scheduler, estate = run(scenario([job("payroll")], {"payroll": target}, until=offset + 61))
    first = offset + 30
    assert target.starts == pytest.approx([offset, offset + 10, offset + 20, first, first + 1, first + 2,
                                           offset + 40, offset + 50, offset + 60])
    assert changes(estate) == [(first, SiteState.DEGRADED), (first + 2, SiteState.DOWN)]
    assert estate.transitions[-1][1].reason == ("3 consecutive failures of health: connection refused "
                                                "(fast confirmation every 1s)")
    assert scheduler.stats.fast_runs == 2
    assert [o.early for o in estate.observations[3:7]] == ["", *["fast confirmation every 1s"] * 2, ""]


def test_recovery_toward_up_is_confirmed_fast_too() -> None:
    offset = round(grid("payroll"), 6)
    target = Target([(0.0, offset + 25)])  # down from the start, back mid-interval
    _, estate = run(scenario([job("payroll")], {"payroll": target}, until=offset + 51))
    assert target.starts == pytest.approx([offset, offset + 1, offset + 2, offset + 10, offset + 20,
                                           offset + 30, offset + 31, offset + 40, offset + 50])
    assert changes(estate) == [(offset, SiteState.DEGRADED), (offset + 2, SiteState.DOWN),
                               (offset + 31, SiteState.UP)]
    assert estate.transitions[-1][1].reason == "2 consecutive successes of every probe (fast confirmation every 1s)"


@pytest.mark.parametrize("fast", [None, 10.0])
def test_fast_interval_equal_to_the_interval_turns_it_off(fast: float | None) -> None:
    offset = grid("payroll")
    target = Target([(offset + 5, 1e9)])
    scheduler, estate = run(scenario([job("payroll", fast=fast)], {"payroll": target}, until=offset + 31))
    assert target.starts == pytest.approx([offset + 10 * i for i in range(4)])
    assert estate.transitions[-1][0] == pytest.approx(offset + 30)  # fall x interval, as before
    assert scheduler.stats.fast_runs == 0


def test_a_due_time_just_after_an_early_run_is_skipped_not_run_twice() -> None:
    offset = grid("payroll")
    target = Target([(offset + 5, 1e9)])
    run(scenario([job("payroll", fast=4.0)], {"payroll": target}, until=offset + 31))
    # failures at +10 (on schedule), +14 and +18 (fast: down); the due time at +20, half a fast_interval after
    # the run at +18, is skipped; the schedule goes on at +30
    assert target.starts == pytest.approx([offset, offset + 10, offset + 14, offset + 18, offset + 30])


def test_correlated_first_failures_re_probe_the_whole_site_once() -> None:
    names = [f"svc{i:02}" for i in range(30)]  # one failure every ~0.3 s once the site dies
    offsets = {name: grid(name) for name in names}
    dies = 12.0
    targets: dict[str, Probe] = {name: Target([(dies, 1e9)]) for name in names}
    scheduler, estate = run(scenario([job(name) for name in names], targets, until=dies + 5,
                                     bursts=(2, 2.0, 1.0)))
    order = sorted(names, key=lambda name: (offsets[name] - dies) % 10)
    second = dies + sorted((offsets[n] - dies) % 10 for n in names)[1]
    assert scheduler.stats.bursts == {"dorset": 1}
    reprobed = [o for o in estate.observations if o.early.startswith("re-probe of dorset: 2 services failed")]
    # every probe of the site, bar the one whose failure called the burst (its run is still finishing)
    assert {o.key.service for o in reprobed} == set(names) - {order[1]}
    downs = {t.service: at for at, t in estate.transitions if t.to_state is SiteState.DOWN}
    assert set(downs) == set(names)
    assert max(downs.values()) <= second + 2.0 + 1e-9  # the burst, then two fast confirmations


def test_a_burst_never_exceeds_max_concurrency() -> None:
    names = [f"svc{i}" for i in range(20)]
    shared = Target([(3.0, 1e9)], takes=0.4)
    scheduler, _ = run(scenario([job(name) for name in names], dict.fromkeys(names, shared), until=8.0,
                                max_concurrency=4, bursts=(2, 2.0, 1.0)))
    assert scheduler.stats.bursts["dorset"] >= 1
    assert shared.most_running == 4


@pytest.mark.parametrize("seed", range(5))
def test_a_flapping_target_multiplies_the_load_by_at_most_max_fall_rise(seed: int) -> None:
    """Every chain of early runs starts from a run on schedule and ends after at most max(fall, rise) - 1 of
    them: a probe runs at most max(fall, rise) times per interval, however its target flaps."""
    import random

    chooser = random.Random(seed)
    edges = sorted(chooser.uniform(0, 600) for _ in range(200))
    outages = list(zip(edges[::2], edges[1::2], strict=True))
    target = Target(outages)
    scheduler, _ = run(scenario([job("payroll")], {"payroll": target}, until=600.0))
    on_schedule = len(target.starts) - scheduler.stats.fast_runs
    assert on_schedule == 60
    assert len(target.starts) <= 3 * on_schedule
    assert scheduler.stats.fast_runs > 0


def test_run_now_leaves_the_schedule_where_it_was() -> None:
    offset = round(grid("payroll"), 6)
    target = Target()

    async def story() -> None:
        scheduler = Scheduler(Estate(), max_concurrency=10)
        scheduler.sync([job("payroll")], lambda j: target)
        await asyncio.sleep(offset + 3)
        scheduler.run_now([ProbeKey("payroll", "dorset", "health")], "test")
        await asyncio.sleep(20)
        await scheduler.stop()

    run(story())
    assert target.starts == pytest.approx([offset, offset + 3, offset + 10, offset + 20])


def test_no_early_runs_while_the_scheduler_is_behind() -> None:
    """Runs on schedule starting over a second late (here: one slot, held 2.5 s by a slow probe just before):
    failures may be bcd's own shortage, so neither fast confirmation nor a burst adds to it."""
    from bcd.config.models import BurstRules

    names = (f"svc{i}" for i in range(1000))
    hog, late = next((a, b) for a in names for b in (f"svc{i}" for i in range(1000))
                     if 0.1 < grid(b) - grid(a) < 1.0)
    targets: dict[str, Probe] = {hog: Target(takes=2.5), late: Target([(0.0, 1e9)])}
    slow = Job(ProbeKey(hog, "dorset", "health"), 10.0, 3.0, b"v1", 4.0)

    async def story() -> tuple[bool, bool]:
        scheduler = Scheduler(Estate(), max_concurrency=1)
        scheduler.sync([slow, job(late)], lambda j: targets[j.key.service], BurstRules(2, 2.0, 1.0))
        await asyncio.sleep(grid(late) + 5)  # its first run starts ~2 s late, and fails
        refused = not scheduler.reprobe("dorset", "test")
        await scheduler.stop()
        return scheduler.behind(), refused

    assert run(story()) == (True, True)
    assert len(targets[late].starts) == 1  # no fast confirmation: the next run waits for its schedule
