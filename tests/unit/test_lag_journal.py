"""Data-lag evidence in the journal (bcd.lag_journal) from a live engine on a real SQLite journal, time a fake
clock: one `data_lag` event when a site's lag crosses the RPO, up or down, and the running maximum at most every
MAX_EVERY seconds and only when it changed — never one event per observation; after a start, one crossing
event says where the lag stands. The maximum pending when observations stop reaches the journal on its own: when
its stretch ends (a timer on a real event loop whose time is fake: tests/helpers/virtual_time.py), when the engine
closes (the daemon stops) and when a reload removes the site's lag."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.events import DataLag, Event
from bcd.journal import Journal
from bcd.lag_journal import MAX_EVERY
from bcd.model import Observation, ProbeKey, Result
from tests.helpers.virtual_time import run
from tests.unit.outputs.test_metrics_data_lag import CONFIG as LAG_CONFIG
from tests.unit.test_engine import Clock

CONFIG = LAG_CONFIG.replace("rpo: 5s", "rpo: 300s")  # payroll: hampshire measures its lag (probe replica)


def lag_events(engine: Engine) -> list[Event]:
    return [event for event in engine.journal.events(0, limit=1000) if event.kind == "data_lag"]


def test_crossings_and_maxima_are_journaled_not_each_observation(tmp_path: Path) -> None:
    clock = Clock()
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
    lags = [100.0] * 10 + [420.0, 450.0] + [120.0] * 28 + [120.0] * 31  # every 10 s: 610 s of observations
    for lag in lags:
        engine.observe(Observation(ProbeKey("payroll", "hampshire", "replica"), Result.OK, 0.01, "OK - replaying",
                                   clock.now, perfdata=(("lag", f"{lag:g}s"),)))
        clock.now += 10.0
    engine.observe(Observation(ProbeKey("payroll", "dorset", "health"), Result.OK, 0.01, "OK", clock.now))
    found = lag_events(engine)
    assert [(e.at, e.reason, e.data) for e in found] == [
        (1000.0, "payroll at hampshire: data lag 100 s is within the RPO of 300 s",
         DataLag("crossing", 100.0, False, 300.0)),  # where it stands at start
        (1100.0, "payroll at hampshire: data lag 420 s exceeds the RPO of 300 s",
         DataLag("crossing", 420.0, True, 300.0)),
        (1120.0, "payroll at hampshire: data lag 120 s is back within the RPO of 300 s",
         DataLag("crossing", 120.0, False, 300.0)),
        (1000.0 + MAX_EVERY, "payroll at hampshire: highest data lag 450 s over the last 300 s (RPO 300 s)",
         DataLag("max", 450.0, True, 300.0, 1000.0)),
        (1000.0 + 2 * MAX_EVERY, "payroll at hampshire: highest data lag 120 s over the last 300 s (RPO 300 s)",
         DataLag("max", 120.0, False, 300.0, 1000.0 + MAX_EVERY)),
    ]
    assert len(found) < len(lags) / 10
    engine.close()


def test_an_unchanged_maximum_is_not_written_again(tmp_path: Path) -> None:
    clock = Clock()
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
    for _ in range(100):  # 1000 s of the same lag
        engine.observe(Observation(ProbeKey("payroll", "hampshire", "replica"), Result.OK, 0.01, "OK", clock.now,
                                   perfdata=(("lag", "12s"),)))
        clock.now += 10.0
    assert [e.data for e in lag_events(engine)] == [DataLag("crossing", 12.0, False, 300.0),
                                                    DataLag("max", 12.0, False, 300.0, 1000.0)]
    engine.close()


def test_after_a_restart_the_first_lag_says_where_it_stands(tmp_path: Path) -> None:
    """Over the RPO when the daemon stopped, within it when it starts again: the journal must not leave it over."""
    clock = Clock()
    replica = ProbeKey("payroll", "hampshire", "replica")
    for lag in ("420s", "100s"):
        engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
        engine.observe(Observation(replica, Result.OK, 0.01, "OK", clock.now, perfdata=(("lag", lag),)))
        engine.close()
        engine.journal.close()
        clock.now += 60.0
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
    crossings = [e for e in lag_events(engine) if e.data.sample == "crossing"]  # type: ignore[union-attr]
    assert [(e.reason, e.data.over) for e in crossings] == [  # type: ignore[union-attr]
        ("payroll at hampshire: data lag 420 s exceeds the RPO of 300 s", True),
        ("payroll at hampshire: data lag 100 s is within the RPO of 300 s", False)]
    engine.close()


def observe_lag(engine: Engine, lag: str, at: float) -> None:
    engine.observe(Observation(ProbeKey("payroll", "hampshire", "replica"), Result.OK, 0.01, "OK", at,
                               perfdata=(("lag", lag),)))


def test_the_maximum_pending_when_observations_stop_is_written_when_its_stretch_ends(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[tuple[float, str, object]], int]:
        loop = asyncio.get_running_loop()
        clock = lambda: 1000.0 + loop.time()  # noqa: E731 - wall time that moves with the (fake) loop time
        engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
        for lag in ("100s", "250s", "180s"):  # then the probe stops answering with a lag
            observe_lag(engine, lag, clock())
            await asyncio.sleep(10.0)
        await asyncio.sleep(3600.0)  # an hour without a lag: one maximum, at the end of its stretch, then nothing
        found = [(e.at, e.reason, e.data) for e in lag_events(engine)]
        timers = sum(1 for track in engine.lags.tracks.values() if track.timer is not None)
        engine.close()
        return found, timers

    found, timers = run(scenario())
    assert found == [
        (1000.0, "payroll at hampshire: data lag 100 s is within the RPO of 300 s", DataLag("crossing", 100.0, False,
                                                                                            300.0)),
        (1000.0 + MAX_EVERY, "payroll at hampshire: highest data lag 250 s over the last 300 s (RPO 300 s)",
         DataLag("max", 250.0, False, 300.0, 1000.0))]
    assert timers == 0  # no timer is left armed while no lag is measured


def test_the_maximum_pending_when_the_daemon_stops_is_written_at_close(tmp_path: Path) -> None:
    clock = Clock()
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
    for lag in ("100s", "250s", "180s"):
        observe_lag(engine, lag, clock.now)
        clock.now += 10.0
    assert [e.data.sample for e in lag_events(engine)] == ["crossing"]  # type: ignore[union-attr]
    engine.close()
    assert [(e.at, e.reason, e.data) for e in lag_events(engine)][1:] == [
        (1030.0, "payroll at hampshire: highest data lag 250 s over the last 30 s (RPO 300 s)",
         DataLag("max", 250.0, False, 300.0, 1000.0))]


def test_a_reload_that_removes_the_lag_writes_its_pending_maximum(tmp_path: Path) -> None:
    clock = Clock()
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
    observe_lag(engine, "420s", clock.now)
    observe_lag(engine, "500s", clock.now + 10.0)
    clock.now += 20.0
    engine.apply_config(parse(CONFIG.format(state=tmp_path)))  # unchanged: nothing written
    assert len(lag_events(engine)) == 1
    engine.apply_config(parse(CONFIG.format(state=tmp_path).replace(
        "        data_lag: {probe: replica, value: lag}\n", "")))
    assert [(e.at, e.reason) for e in lag_events(engine)][1:] == [
        (1020.0, "payroll at hampshire: highest data lag 500 s over the last 20 s (RPO 300 s)")]
    assert engine.lags.tracks == {}
    engine.close()
    assert len(lag_events(engine)) == 2  # closing writes nothing more for it
