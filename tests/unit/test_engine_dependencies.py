"""The engine with `depends_on` and site loss, on a real SQLite journal, a real bus and a real Runner (fake
clock): a dependent decides again the moment its dependency's status changes (no tick needed), and a site
whose every service is down is announced lost, then recovered, and again after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bcd.bus import Bus, Subscription
from bcd.config import parse
from bcd.engine import Engine
from bcd.events import Event, EventKind, SiteLost
from bcd.journal import Journal
from bcd.model import Guard, Observation, ProbeKey, Result, ServiceStatus
from tests.helpers.runner_kit import acting

CONFIG = """
instance: unit
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s, rise: 1, fall: 1}}
runbooks:
  held: {{steps: [{{name: hold, approval: {{timeout: 1h}}}}]}}
  move: {{steps: [{{name: wait, sleep: {{duration: 0s}}}}]}}
services:
  directory:
    active: dorset
    failover: {{runbook: held, mode: auto, cooldown: 0s}}
    sites: &sites
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
  payroll:
    active: dorset
    depends_on: [directory]
    failover: {{runbook: move, mode: auto, cooldown: 0s}}
    sites: *sites
"""


class Clock:
    """A fake clock: time moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def observe(engine: Engine, service: str, site: str, result: Result, at: float) -> None:
    engine.observe(Observation(ProbeKey(service, site, "health"), result, 0.01, f"{result} from {site}", at))


async def next_event(events: Subscription, kind: EventKind, service: str | None = None) -> Event:
    async with asyncio.timeout(10):
        while True:
            event = await events.get()
            if event.kind == kind and (service is None or event.service == service):
                return event


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    made, runner = acting(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock=Clock())
    yield made
    await runner.stop()
    made.close()


async def test_a_dependent_starts_the_moment_its_dependency_is_up_on_the_target(engine: Engine) -> None:
    events = engine.bus.subscribe("test")
    for service in ("directory", "payroll"):
        for site in ("dorset", "hampshire"):
            observe(engine, service, site, Result.OK, 1000.0)
    observe(engine, "directory", "dorset", Result.FAIL, 1001.0)
    waiting = await next_event(events, EventKind.APPROVAL_WAITING, "directory")  # directory's run holds
    observe(engine, "payroll", "dorset", Result.FAIL, 1002.0)
    payroll = engine.services["payroll"]
    assert (payroll.status, payroll.guard) == (ServiceStatus.FAILOVER_PENDING, Guard.WAITING_FOR_DEPENDENCY)
    assert "payroll: failover to hampshire waits for directory (failover_pending, run_in_progress)" in payroll.reason

    assert engine.runner is not None and engine.runner.approve(waiting.data.run_id, "olive")  # type: ignore[union-attr]
    started = await next_event(events, EventKind.RUN_STARTED, "payroll")  # no tick: decided on directory's change
    assert started.reason.startswith("payroll: starting failover to hampshire")
    assert engine.services["directory"].active == "hampshire"


async def test_a_site_with_every_service_down_is_lost_and_recovered(engine: Engine, tmp_path: Path) -> None:
    events = engine.bus.subscribe("test")
    observe(engine, "directory", "dorset", Result.FAIL, 1001.0)
    observe(engine, "payroll", "dorset", Result.FAIL, 1002.0)
    lost = await next_event(events, EventKind.SITE_LOST)
    assert (lost.site, lost.service, lost.data, lost.at) == ("dorset", None, SiteLost(("directory", "payroll")), 1002.0)
    assert set(engine.site_loss.lost) == {"dorset"}
    observe(engine, "payroll", "dorset", Result.OK, 1010.0)
    recovered = await next_event(events, EventKind.SITE_RECOVERED)
    assert (recovered.site, recovered.data.lost_since) == ("dorset", 1002.0)  # type: ignore[union-attr]
    assert engine.site_loss.lost == {}


def test_a_restarted_engine_announces_a_site_still_lost_on_its_first_tick(tmp_path: Path) -> None:
    config = parse(CONFIG.format(state=tmp_path))
    first = Engine(config, Journal(tmp_path / "bcd.sqlite"), Bus(), clock=Clock())
    for service in ("directory", "payroll"):
        observe(first, service, "dorset", Result.FAIL, 1001.0)
    first.close()
    again = Engine(config, Journal(tmp_path / "bcd.sqlite"), Bus(), clock=Clock(2000.0))
    assert again.site_loss.lost == {}
    again.tick()
    assert list(again.site_loss.lost) == ["dorset"]
    assert again.site_loss.lost["dorset"].since == 2000.0
