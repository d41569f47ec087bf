"""The engine on a real SQLite journal, a real bus and (where runs matter) a real Runner with real step kinds:
observations move sites and services (with their reasons), what the journal holds is restored at start, a
reload keeps what did not change, maintenance begins, is extended, ends and expires, operators' requests are
refused with the reason of each guard, a successful run moves the active site, and an acknowledgement
unblocks a service whose run failed. Time is a fake clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bcd.bus import Bus, Subscription
from bcd.config import parse
from bcd.engine import Engine, RequestRefused
from bcd.events import Event
from bcd.journal import Journal
from bcd.model import HURRY, SETTLED, SUSPECT, Guard, Observation, ProbeKey, Result, RunKind, ServiceStatus, SiteState
from bcd.policy import Request
from bcd.runbooks.runner import Runner
from tests.helpers import estates
from tests.helpers.runner_kit import acting

LIBRARY = """
  library:
    active: hampshire
    sites:
      hampshire: {probes: [{name: opac, tcp: {host: 127.0.0.1, port: 3}}]}
"""
SLEEP = "{name: wait, sleep: {duration: 0s}}"
HOLD = "{name: hold, approval: {timeout: 1h}}"  # a run that stays in progress until approved
FALSE = "{name: fail, command: {argv: [/bin/false]}}"


class Clock:
    """A fake clock: time moves only when the test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config_text(state: Path, *, step: str = SLEEP, mode: str = "manual", cooldown: str = "0s",
                library: bool = True) -> str:
    """estates.payroll, and the one-site service `library` unless told otherwise."""
    return estates.payroll(state, step=step, mode=mode, cooldown=cooldown, extra=LIBRARY if library else "")


def make_engine(tmp_path: Path, clock: Clock, **options: object) -> Engine:
    return Engine(parse(config_text(tmp_path, **options)), Journal(tmp_path / "bcd.sqlite"), Bus(),  # type: ignore[arg-type]
                  clock=clock)


def observe(engine: Engine, site: str, result: Result, at: float, *, service: str = "payroll",
            probe: str = "health") -> None:
    engine.observe(Observation(ProbeKey(service, site, probe), result, 0.01, f"{result} from {site}", at))


def journaled(engine: Engine, kind: str, after: int = 0) -> list[Event]:
    """The events of `kind` in the journal (outside an event loop the engine commits each change at once)."""
    return [event for event in engine.journal.events(after, limit=1000) if event.kind == kind]


def status(engine: Engine, service: str = "payroll") -> tuple[ServiceStatus, Guard | None, str]:
    view = engine.services[service]
    return view.status, view.guard, view.reason


def state(engine: Engine, site: str, service: str = "payroll") -> SiteState:
    return engine.sites[(service, site)].state


# -- observations → site transitions → service status ---------------------------------------------------------

# (site observed, result) → (that site's state, its transition's reason, the service's status, its reason)
SEQUENCE = [
    (("dorset", Result.OK), (SiteState.UP, "all probes passing", ServiceStatus.OK, "payroll: active site dorset up")),
    (("hampshire", Result.OK), (SiteState.UP, "all probes passing", ServiceStatus.OK,
                                "payroll: active site dorset up")),
    (("dorset", Result.FAIL), (SiteState.DOWN, "1 failure of health: fail from dorset", ServiceStatus.FAILOVER_PENDING,
                               "payroll: failover to hampshire waits for an operator: active dorset down (1 failure "
                               "of health: fail from dorset); standby hampshire up")),
    (("hampshire", Result.FAIL), (SiteState.DOWN, "1 failure of health: fail from hampshire",
                                  ServiceStatus.UNAVAILABLE, "payroll: no site up: dorset down, hampshire down")),
    (("dorset", Result.OK), (SiteState.UP, "1 success of every probe", ServiceStatus.OK,
                             "payroll: active site dorset up")),
]


def test_observations_move_sites_and_the_service_each_with_its_reason(tmp_path: Path) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    for step, ((site, result), (site_state, site_reason, service_status, service_reason)) in enumerate(SEQUENCE):
        clock.now += 10
        last_event = engine.journal.last_events(1)
        after = last_event[0].id or 0 if last_event else 0
        observe(engine, site, result, clock.now)
        assert state(engine, site) is site_state, step
        assert engine.sites[("payroll", site)].reason == site_reason, step
        assert status(engine)[::2] == (service_status, service_reason), step
        (transition,) = journaled(engine, "site_transition", after)
        assert (transition.site, transition.reason, transition.at) == (site, site_reason, clock.now)
        assert transition.to_json()["to"] == str(site_state)
        changes = journaled(engine, "service_status", after)
        assert [change.reason for change in changes] == ([] if step == 1 else [service_reason]), step


def test_the_journal_says_when_fast_confirmation_made_a_site_down(tmp_path: Path) -> None:
    """observe() tells the scheduler what is in doubt; the transition an early run brings is journaled saying so."""
    text = config_text(tmp_path).replace("rise: 1, fall: 1", "rise: 2, fall: 3")
    engine = Engine(parse(text), Journal(tmp_path / "bcd.sqlite"), Bus(), clock=Clock())
    for i in range(2):
        assert engine.observe(Observation(ProbeKey("payroll", "dorset", "health"), Result.OK, 0.01, "ok",
                                          1000.0 + i)) == SETTLED
    verdicts = []
    for i, early in enumerate(["", "fast confirmation every 1s", "fast confirmation every 1s"]):
        verdicts.append(engine.observe(Observation(ProbeKey("payroll", "dorset", "health"), Result.FAIL, 0.01,
                                                   "HTTP 503", 1010.0 + i, early=early)))
    assert verdicts == [HURRY | SUSPECT, HURRY, SETTLED]
    (down,) = [event for event in journaled(engine, "site_transition") if event.to_json()["to"] == "down"]
    assert down.reason == "3 consecutive failures of health: HTTP 503 (fast confirmation every 1s)"


def test_an_observation_that_changes_nothing_announces_nothing(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, Clock())
    observe(engine, "dorset", Result.OK, 1000.0)
    before = engine.journal.last_events(100)
    observe(engine, "dorset", Result.OK, 1010.0)
    assert engine.journal.last_events(100) == before


def test_a_flapping_standby_blocks_an_automatic_failover(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, Clock(), mode="auto")
    observe(engine, "dorset", Result.OK, 1000.0)
    flap(engine, "hampshire")
    observe(engine, "dorset", Result.FAIL, 1100.0)
    view_status, guard, reason = status(engine)
    assert (view_status, guard) == (ServiceStatus.BLOCKED, Guard.FLAPPING), reason
    assert "hampshire flapping" in reason


def flap(engine: Engine, site: str) -> None:
    """Alternate a site's probe until it is flapping (12 changes in a row are above the 30% threshold)."""
    for index in range(12):
        observe(engine, site, Result.FAIL if index % 2 == 0 else Result.OK, 2000.0 + index)
    assert state(engine, site) is SiteState.FLAPPING


# -- restart and reload ---------------------------------------------------------------------------------------

def test_a_restarted_engine_restores_sites_and_services_without_announcing_them_again(tmp_path: Path) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    observe(engine, "dorset", Result.FAIL, 1000.0)
    observe(engine, "hampshire", Result.OK, 1000.0)
    assert status(engine)[0] is ServiceStatus.FAILOVER_PENDING
    engine.close()
    engine.journal.close()
    written = Journal(tmp_path / "bcd.sqlite").last_events(1000)

    clock.now = 5000.0
    again = make_engine(tmp_path, clock)
    assert state(again, "dorset") is SiteState.DOWN
    assert again.sites[("payroll", "dorset")].since == 1000.0  # not restarted at 5000
    assert state(again, "hampshire") is SiteState.UP
    assert status(again)[0] is ServiceStatus.FAILOVER_PENDING
    assert again.journal.last_events(1000) == written  # no transition or status change announced again


def test_a_reload_forgets_removed_services_and_keeps_the_state_of_unchanged_ones(tmp_path: Path) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    observe(engine, "dorset", Result.FAIL, 1000.0)
    observe(engine, "hampshire", Result.OK, 1000.0)
    observe(engine, "hampshire", Result.OK, 1000.0, service="library", probe="opac")
    before = engine.journal.last_events(1000)

    clock.now = 2000.0
    engine.apply_config(parse(config_text(tmp_path, library=False)))
    assert set(engine.services) == {"payroll"}
    assert set(engine.sites) == {("payroll", "dorset"), ("payroll", "hampshire")}
    assert (state(engine, "dorset"), state(engine, "hampshire")) == (SiteState.DOWN, SiteState.UP)
    assert engine.sites[("payroll", "dorset")].since == 1000.0
    assert status(engine)[0] is ServiceStatus.FAILOVER_PENDING
    assert engine.journal.last_events(1000) == before  # nothing changed, so nothing is announced
    observe(engine, "hampshire", Result.FAIL, 2000.0, service="library", probe="opac")  # a probe in flight
    assert "library" not in engine.services


def test_a_reload_adding_a_service_starts_it_unknown(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, Clock(), library=False)
    engine.apply_config(parse(config_text(tmp_path)))
    assert state(engine, "hampshire", "library") is SiteState.UNKNOWN
    assert status(engine, "library")[::2] == (ServiceStatus.UNKNOWN,
                                             "library: active site hampshire unknown (no observation yet)")


# -- maintenance ------------------------------------------------------------------------------------------------

def test_maintenance_starts_is_extended_ends_and_is_persisted(tmp_path: Path) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    observe(engine, "hampshire", Result.OK, 1000.0)

    assert engine.start_maintenance("payroll", "hampshire", 600.0, "patching", "olive") == ["hampshire"]
    assert state(engine, "hampshire") is SiteState.MAINTENANCE
    assert state(engine, "dorset") is SiteState.UNKNOWN  # only the site named
    (started,) = journaled(engine, "maintenance_started")
    assert (started.site, started.reason) == ("hampshire", "olive: patching")
    assert saved_until(engine, "hampshire") == 1600.0

    clock.now = 1100.0
    engine.start_maintenance("payroll", "hampshire", 600.0, "patching longer", "olive")
    (extended,) = journaled(engine, "maintenance_extended")
    assert extended.site == "hampshire"
    assert saved_until(engine, "hampshire") == 1700.0

    clock.now = 1200.0
    assert engine.end_maintenance("payroll", None, "olive") == ["hampshire"]  # every site: only the one in it
    assert state(engine, "hampshire") is SiteState.UP
    (ended,) = journaled(engine, "maintenance_ended")
    assert ended.reason == "ended by olive"
    assert journaled(engine, "site_transition")[-1].reason == "ended by olive"
    assert saved_until(engine, "hampshire") is None


def test_maintenance_expires_on_the_tick_after_its_end(tmp_path: Path) -> None:
    clock = Clock()
    engine = make_engine(tmp_path, clock)
    observe(engine, "dorset", Result.FAIL, 1000.0)
    assert engine.start_maintenance("payroll", None, 600.0, "moving racks", "olive") == ["dorset", "hampshire"]

    clock.now = 1599.0
    engine.tick()
    assert (state(engine, "dorset"), state(engine, "hampshire")) == (SiteState.MAINTENANCE,) * 2
    clock.now = 1600.0
    engine.tick()
    assert (state(engine, "dorset"), state(engine, "hampshire")) == (SiteState.DOWN, SiteState.UNKNOWN)
    expired = [event for event in journaled(engine, "site_transition") if event.at == 1600.0]
    assert [(event.site, event.reason) for event in expired] == [
        ("dorset", "maintenance ended (expired)"), ("hampshire", "maintenance ended (expired)")]


def test_maintenance_of_a_site_a_service_lacks_is_refused(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, Clock())
    with pytest.raises(KeyError, match="payroll has no site 'kent'"):
        engine.start_maintenance("payroll", "kent", 600.0, "works", "olive")


def saved_until(engine: Engine, site: str) -> float | None:
    (saved,) = [row for row in engine.journal.sites() if (row.service, row.site) == ("payroll", site)]
    return saved.maintenance_until


# -- engines with a real runner --------------------------------------------------------------------------------

@dataclass
class Live:
    engine: Engine
    runner: Runner
    clock: Clock
    events: Subscription

    async def wait(self, kind: str, timeout: float = 10.0) -> Event:
        """The next event of `kind` on the bus (published only once it has been journaled)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if event.kind == kind:
                    return event

    async def run_to_end(self, request: Request) -> Event:
        run = await self.engine.submit("payroll", request, "olive", "drill")
        finished = await self.wait("run_finished")
        assert finished.to_json()["run_id"] == run.id
        return finished


LiveFactory = Callable[..., Awaitable[Live]]


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveFactory]:
    """Makes an engine with a real Runner (on the engine's journal) and a bus subscription; stops the runner."""
    made: list[Live] = []

    async def make(**options: object) -> Live:
        clock = Clock()
        engine, runner = acting(parse(config_text(tmp_path, **options)), Journal(tmp_path / "bcd.sqlite"), Bus(),  # type: ignore[arg-type]
                                clock=clock)
        made.append(Live(engine, runner, clock, engine.bus.subscribe("test")))
        return made[-1]

    yield make
    for each in made:
        await each.runner.stop()
        each.engine.close()


async def both_up(live: Live) -> None:
    for site in ("dorset", "hampshire"):
        observe(live.engine, site, Result.OK, live.clock.now)


async def start_holding_run(live: Live) -> None:
    await both_up(live)
    await live.engine.submit("payroll", Request(RunKind.FAILOVER), "olive", "drill")


async def hampshire_down(live: Live) -> None:
    observe(live.engine, "hampshire", Result.FAIL, live.clock.now)


async def hampshire_flapping(live: Live) -> None:
    flap(live.engine, "hampshire")


async def hampshire_in_maintenance(live: Live) -> None:
    await both_up(live)
    live.engine.start_maintenance("payroll", "hampshire", 600.0, "patching", "olive")


async def in_cooldown(live: Live) -> None:
    await both_up(live)
    await live.run_to_end(Request(RunKind.FAILOVER))  # to hampshire, ended at 1000
    live.clock.now = 1600.0


REFUSALS = [  # (what happened first, the request) → (guard, reason, a conflict: HTTP 409)
    pytest.param(both_up, Request(RunKind.FAILOVER, to_site="kent"), Guard.STANDBY_NOT_UP,
                 "payroll has no site 'kent'", False, id="no-such-site"),
    pytest.param(both_up, Request(RunKind.FAILOVER, to_site="dorset"), Guard.STANDBY_NOT_UP,
                 "dorset is already the active site of payroll", False, id="already-active"),
    pytest.param(hampshire_down, Request(RunKind.FAILOVER), Guard.STANDBY_NOT_UP,
                 "no standby of payroll is up", False, id="no-standby-up"),
    pytest.param(hampshire_down, Request(RunKind.FAILOVER, to_site="hampshire"), Guard.STANDBY_NOT_UP,
                 "target hampshire is down, not up (use force)", False, id="standby-down"),
    pytest.param(hampshire_flapping, Request(RunKind.FAILOVER, to_site="hampshire"), Guard.STANDBY_NOT_UP,
                 "target hampshire is flapping, not up (use force)", False, id="standby-flapping"),
    pytest.param(hampshire_in_maintenance, Request(RunKind.FAILOVER, to_site="hampshire"), Guard.MAINTENANCE,
                 "target hampshire is in maintenance (use force)", False, id="standby-in-maintenance"),
    pytest.param(start_holding_run, Request(RunKind.FAILOVER), Guard.RUN_IN_PROGRESS,
                 "run 1 of payroll is in progress", True, id="run-in-progress"),
    pytest.param(in_cooldown, Request(RunKind.FAILOVER), Guard.COOLDOWN,
                 "cooldown: 3000s left (use force)", False, id="cooldown"),
    pytest.param(both_up, Request(RunKind.FAILBACK), Guard.STANDBY_NOT_UP,
                 "payroll is already on its home site dorset", False, id="failback-at-home"),
]


@pytest.mark.parametrize(("before", "request_", "guard", "reason", "conflict"), REFUSALS)
async def test_submit_refuses_with_the_reason_of_each_guard(
    live: LiveFactory, before: Callable[[Live], Awaitable[None]], request_: Request, guard: Guard,
    reason: str, conflict: bool,
) -> None:
    estate = await live(step=HOLD if before is start_holding_run else SLEEP, cooldown="1h")
    await before(estate)
    runs_before = estate.engine.runs.recent()
    with pytest.raises(RequestRefused) as refused:
        await estate.engine.submit("payroll", request_, "olive", "drill")
    assert (refused.value.verdict.guard, str(refused.value), refused.value.verdict.conflict) == (
        guard, reason, conflict)
    assert estate.engine.runs.recent() == runs_before  # no run started


async def test_a_forced_request_passes_the_guards(live: LiveFactory) -> None:
    estate = await live()
    observe(estate.engine, "hampshire", Result.FAIL, 1000.0)
    finished = await estate.run_to_end(Request(RunKind.FAILOVER, to_site="hampshire", force=True))
    assert finished.to_json()["result"] == "succeeded"
    (run,) = estate.engine.runs.recent()
    assert (run.forced, run.reason) == (True, "olive: drill (forced)")


async def test_a_successful_run_makes_its_target_active_and_the_journal_keeps_it(
    live: LiveFactory, tmp_path: Path
) -> None:
    estate = await live()
    await both_up(estate)
    finished = await estate.run_to_end(Request(RunKind.FAILOVER))
    assert finished.to_json()["result"] == "succeeded"
    assert estate.engine.services["payroll"].active == "hampshire"
    (changed,) = journaled(estate.engine, "active_changed")
    assert (changed.site, changed.reason) == ("hampshire", f"run {finished.to_json()['run_id']} made hampshire active")
    (saved,) = [row for row in estate.engine.journal.services() if row.service == "payroll"]
    assert saved.active == "hampshire"
    again = make_engine(tmp_path, Clock(9000.0))  # a restarted daemon: the config still says dorset
    assert again.services["payroll"].active == "hampshire"


async def test_a_failed_run_blocks_its_service_until_acknowledged(live: LiveFactory) -> None:
    estate = await live(step=FALSE)
    await both_up(estate)
    finished = await estate.run_to_end(Request(RunKind.FAILOVER))
    run_id = finished.to_json()["run_id"]
    assert finished.to_json()["result"] == "failed"
    view_status, guard, reason = status(estate.engine)
    assert (view_status, guard) == (ServiceStatus.BLOCKED, Guard.RUN_FAILED), reason
    with pytest.raises(RequestRefused, match=rf"run {run_id} of payroll needs acknowledging first \(bcd ack\)"):
        await estate.engine.submit("payroll", Request(RunKind.FAILOVER), "olive", "again")

    assert estate.engine.acknowledge("payroll", "olive", "looked at it") == [run_id]
    acknowledged = await estate.wait("acknowledged")
    assert acknowledged.reason == "olive: looked at it"
    assert status(estate.engine)[:2] == (ServiceStatus.OK, None)
    await estate.engine.submit("payroll", Request(RunKind.FAILOVER), "olive", "again")  # accepted now
    assert (await estate.wait("run_started")).to_json()["trigger"] == "olive"


async def test_an_automatic_failover_starts_when_the_active_site_goes_down(live: LiveFactory) -> None:
    estate = await live(mode="auto")
    await both_up(estate)
    observe(estate.engine, "dorset", Result.FAIL, 1010.0)
    started = await estate.wait("run_started")
    assert (started.to_json()["trigger"], started.to_json()["to"]) == ("auto", "hampshire")
    assert (await estate.wait("run_finished")).to_json()["result"] == "succeeded"
    assert estate.engine.services["payroll"].active == "hampshire"


async def test_events_are_journaled_in_one_commit_then_logged_and_published_in_order(live: LiveFactory) -> None:
    estate = await live()
    with capture_logs() as logs:
        observe(estate.engine, "dorset", Result.OK, 1000.0)
        observe(estate.engine, "hampshire", Result.OK, 1000.0)
        observe(estate.engine, "dorset", Result.FAIL, 1000.0)
        assert estate.engine.journal.last_events(10) == []  # staged for the group commit, not written one by one
        assert logs == []  # logged once journaled
        published = [await estate.events.get() for _ in range(5)]
    expected = [("site_transition", "dorset"), ("service_status", None), ("site_transition", "hampshire"),
                ("site_transition", "dorset"), ("service_status", None)]
    assert [(event.kind, event.site) for event in published] == expected
    assert published == estate.engine.journal.last_events(10)  # each published with its journal id, in order
    assert [(line["event"], line.get("site")) for line in logs] == expected
    assert all("journaled" not in line for line in logs)  # (a line says journaled=False when it could not be)


async def test_an_automatic_failover_held_by_the_cooldown_starts_on_the_tick_after_it(live: LiveFactory) -> None:
    estate = await live(mode="auto", cooldown="1h")
    await both_up(estate)
    observe(estate.engine, "dorset", Result.FAIL, 1000.0)  # failed over to hampshire, ended at 1000
    assert (await estate.wait("run_finished")).to_json()["result"] == "succeeded"
    observe(estate.engine, "dorset", Result.OK, 1000.0)
    estate.clock.now = 1600.0
    observe(estate.engine, "hampshire", Result.FAIL, 1600.0)
    view_status, guard, reason = status(estate.engine)
    assert (view_status, guard) == (ServiceStatus.BLOCKED, Guard.COOLDOWN), reason
    assert "3000s" in reason

    estate.clock.now = 4599.0
    estate.engine.tick()
    assert estate.runner.running("payroll") is None
    estate.clock.now = 4600.0
    estate.engine.tick()
    started = await estate.wait("run_started")
    assert (started.to_json()["trigger"], started.to_json()["to"], started.at) == ("auto", "dorset", 4600.0)
