"""The scheduler on a real event loop, with in-process recording probes (the thing under test is timing)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from bcd.model import Observation, ProbeKey, ProbeResult, Result
from bcd.probes.base import Probe
from bcd.scheduler import Job, Scheduler, spread_offset


class RecordingProbe:
    """A stand-in probe that records when it ran; `hold` keeps a run in flight until set."""

    def __init__(self, result: Result = Result.OK, hold: asyncio.Event | None = None, raises: bool = False) -> None:
        self.starts: list[float] = []
        self.result = result
        self.hold = hold
        self.raises = raises

    async def run(self) -> ProbeResult:
        self.starts.append(asyncio.get_running_loop().time())
        if self.raises:
            raise RuntimeError("boom")
        if self.hold is not None:
            await self.hold.wait()
        return ProbeResult(self.result, 0.001, "recorded")


def job(name: str, interval: float = 0.1, timeout: float = 0.05, fingerprint: bytes = b"v1") -> Job:
    return Job(ProbeKey("svc", "dorset", name), interval, timeout, fingerprint)


class Sink:
    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.changed = asyncio.Event()

    def __call__(self, obs: Observation) -> None:
        self.observations.append(obs)
        self.changed.set()

    async def wait_for(self, predicate: Callable[[list[Observation]], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.observations):
                self.changed.clear()
                await self.changed.wait()


def builder(probes: dict[str, Probe]) -> Callable[[Job], Probe]:
    return lambda j: probes[j.key.probe]


def test_spread_offset_is_stable_and_inside_the_interval() -> None:
    keys = [ProbeKey("svc", site, f"p{i}") for i in range(200) for site in ("a", "b")]
    offsets = [spread_offset(key, 10.0) for key in keys]
    assert all(0 <= offset < 10.0 for offset in offsets)
    assert offsets == [spread_offset(key, 10.0) for key in keys]
    # spread, not a herd: every tenth of the interval gets some probes
    assert {int(offset) for offset in offsets} == set(range(10))


async def test_runs_every_interval_and_reports_observations() -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10, vantage="dorset")
    probe = RecordingProbe()
    scheduler.sync([job("a", interval=0.05)], builder({"a": probe}))
    await sink.wait_for(lambda obs: len(obs) >= 5)
    await scheduler.stop()
    # due times never drift: on average the runs are one interval apart, whatever the jitter of each
    mean_gap = (probe.starts[-1] - probe.starts[0]) / (len(probe.starts) - 1)
    assert 0.04 <= mean_gap <= 0.07, probe.starts
    assert sink.observations[0].vantage == "dorset"
    assert sink.observations[0].key == ProbeKey("svc", "dorset", "a")
    assert scheduler.all_ran_once()


async def test_a_run_still_in_flight_is_skipped_not_queued() -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    hold = asyncio.Event()
    probe = RecordingProbe(hold=hold)
    scheduler.sync([job("slow", interval=0.02, timeout=10.0)], builder({"slow": probe}))
    async with asyncio.timeout(5):
        while scheduler.stats.skipped < 3:  # noqa: ASYNC110 - a counter with no event to await; deadline above
            await asyncio.sleep(0.01)
    assert len(probe.starts) == 1
    hold.set()
    await sink.wait_for(lambda obs: len(obs) >= 1)
    await scheduler.stop()


async def test_timeout_becomes_a_failed_observation() -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    scheduler.sync([job("hang", interval=5.0, timeout=0.01)], builder({"hang": RecordingProbe(hold=asyncio.Event())}))
    scheduler.run_now([ProbeKey("svc", "dorset", "hang")])
    await sink.wait_for(lambda obs: len(obs) >= 1)
    await scheduler.stop()
    assert sink.observations[0].result is Result.FAIL
    assert sink.observations[0].reason == "timeout after 0.01s"


async def test_a_probe_that_raises_is_a_failed_check_not_a_crash() -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    scheduler.sync([job("bad", interval=5.0)], builder({"bad": RecordingProbe(raises=True)}))
    scheduler.run_now([ProbeKey("svc", "dorset", "bad")])
    await sink.wait_for(lambda obs: len(obs) >= 1)
    await scheduler.stop()
    assert sink.observations[0].result is Result.FAIL
    assert "boom" in sink.observations[0].reason


async def test_concurrency_cap_holds() -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=2)
    hold = asyncio.Event()
    probes = {f"p{i}": RecordingProbe(hold=hold) for i in range(6)}
    scheduler.sync([job(name, interval=5.0, timeout=10.0) for name in probes], builder(dict(probes)))
    scheduler.run_now([ProbeKey("svc", "dorset", name) for name in probes])
    async with asyncio.timeout(5):
        while scheduler.stats.in_flight < 2:  # noqa: ASYNC110 - a gauge with no event to await; deadline above
            await asyncio.sleep(0.01)
    assert scheduler.stats.in_flight == 2
    assert sum(len(p.starts) for p in probes.values()) == 2
    hold.set()
    await sink.wait_for(lambda obs: len(obs) == 6)
    await scheduler.stop()
    assert scheduler.stats.lateness.count == 6


@pytest.mark.parametrize("change", ["same", "changed", "removed"])
async def test_sync_keeps_unchanged_jobs_and_replaces_changed_ones(change: str) -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    first, second = RecordingProbe(), RecordingProbe()
    scheduler.sync([job("a", interval=5.0)], builder({"a": first}))
    jobs = {"same": [job("a", interval=5.0)], "changed": [job("a", interval=5.0, fingerprint=b"v2")], "removed": []}
    scheduler.sync(jobs[change], builder({"a": second}))
    scheduler.run_now([ProbeKey("svc", "dorset", "a")])
    if change != "removed":
        await sink.wait_for(lambda obs: len(obs) >= 1)
    assert scheduler.keys == ({ProbeKey("svc", "dorset", "a")} if change != "removed" else set())
    await scheduler.stop()
    expected = {"same": (1, 0), "changed": (0, 1), "removed": (0, 0)}[change]
    assert (len(first.starts), len(second.starts)) == expected


async def test_a_probe_due_before_the_armed_timer_runs_on_time() -> None:
    """One timer serves the whole heap: a newly added probe due sooner than it re-arms it."""
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    slow, fast = RecordingProbe(), RecordingProbe()
    probes: dict[str, Probe] = {"slow": slow, "fast": fast}
    scheduler.sync([job("slow", interval=30.0)], builder(probes))
    scheduler.sync([job("slow", interval=30.0), job("fast", interval=0.05)], builder(probes))
    await sink.wait_for(lambda obs: len(obs) >= 4, timeout=1.0)  # the slow probe's timer is seconds away
    await scheduler.stop()
    assert len(fast.starts) >= 4
    assert not slow.starts


async def test_probes_of_different_intervals_each_keep_their_own() -> None:
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    probes = {"p30": RecordingProbe(), "p70": RecordingProbe()}
    scheduler.sync([job("p30", interval=0.03), job("p70", interval=0.07)], builder(dict(probes)))
    await sink.wait_for(lambda obs: sum(o.key.probe == "p70" for o in obs) >= 6)
    await scheduler.stop()
    for name, interval in (("p30", 0.03), ("p70", 0.07)):
        starts = probes[name].starts
        mean_gap = (starts[-1] - starts[0]) / (len(starts) - 1)
        assert interval * 0.8 <= mean_gap <= interval * 1.3, (name, starts)


async def test_a_removed_probe_never_runs_again() -> None:
    """Its place in the heap stays until due, and is skipped then."""
    sink = Sink()
    scheduler = Scheduler(sink, max_concurrency=10)
    gone, kept = RecordingProbe(), RecordingProbe()
    probes: dict[str, Probe] = {"gone": gone, "kept": kept}
    scheduler.sync([job("gone", interval=0.02), job("kept", interval=0.02)], builder(probes))
    await sink.wait_for(lambda obs: sum(o.key.probe == "gone" for o in obs) >= 2)
    scheduler.sync([job("kept", interval=0.02)], builder(probes))
    ran = len(gone.starts)
    kept_before = len(kept.starts)
    await sink.wait_for(lambda obs: len(kept.starts) >= kept_before + 5)
    await scheduler.stop()
    assert len(gone.starts) == ran
