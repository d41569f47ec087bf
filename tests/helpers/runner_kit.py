"""What the runner tests share (unit and integration): a real Runner on a real journal, driven through a small
fake of the RunHooks interface (the only fake: everything the steps touch is real)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bcd.bus import Bus
from bcd.config import Config
from bcd.engine import Engine
from bcd.events import Event
from bcd.journal import Journal, RunJournal, RunRecord, StepRecord
from bcd.model import RunKind, SiteState
from bcd.runbooks.runner import ActiveRun, Runner, RunRequest
from bcd.runbooks.specs import Runbook

SCRIPTS = Path(__file__).parents[1] / "data" / "scripts"


class FakeHooks:
    """The daemon side of RunHooks: site states a test sets, and a record of what the runner reported."""

    def __init__(self) -> None:
        self.states: dict[str, SiteState] = {}
        self.events: list[Event] = []
        self.changed: list[str] = []
        self.succeeded: list[tuple[str, str, int]] = []
        self._new_event = asyncio.Event()

    def site_state(self, service: str, site: str) -> SiteState:
        return self.states.get(site, SiteState.UP)

    def run_changed(self, service: str) -> None:
        self.changed.append(service)

    def run_succeeded(self, service: str, to_site: str, run_id: int) -> None:
        self.succeeded.append((service, to_site, run_id))

    def emit(self, event: Event, **log_fields: object) -> None:
        self.events.append(event)
        self._new_event.set()

    async def wait_event(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        """The first event matching `predicate`, waiting for it if need be."""
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._new_event.clear()
                await self._new_event.wait()


class Kit:
    """A Runner with its journal, hooks and HTTP session, and shortcuts to run a runbook to its end."""

    def __init__(self, journal: RunJournal, hooks: FakeHooks, session: aiohttp.ClientSession) -> None:
        self.journal = journal
        self.hooks = hooks
        self.session = session
        self.runner = self.make_runner()

    def make_runner(self, **options: Any) -> Runner:
        return Runner(self.journal, self.hooks, lambda: self.session, **options)

    def start(self, runbook: dict[str, Any], *, runner: Runner | None = None, **request: Any) -> ActiveRun:
        fields: dict[str, Any] = {
            "service": "payroll", "runbook_name": "move-payroll", "runbook": Runbook.model_validate(runbook),
            "kind": RunKind.FAILOVER, "from_site": "dorset", "to_site": "hampshire", "trigger": "auto",
            "reason": "test", **request,
        }
        return (runner or self.runner).start(RunRequest(**fields))

    async def run(self, runbook: dict[str, Any], **request: Any) -> tuple[RunRecord, list[StepRecord]]:
        """Start a run, wait for its end; the journaled run and steps."""
        run = self.start(runbook, **request)
        await run_ended(run, 20)
        return self.finished(run.id)

    def finished(self, run_id: int) -> tuple[RunRecord, list[StepRecord]]:
        record = self.journal.get(run_id)
        assert record is not None
        return record, self.journal.steps(run_id)

    async def wait_step_started(self, run: ActiveRun, name: str) -> None:
        await self.hooks.wait_event(
            lambda e: e.kind == "step_started" and e.to_json()["run_id"] == run.id and e.to_json()["step"] == name
        )


async def run_ended(run: ActiveRun, timeout: float = 10.0) -> None:
    """Wait for a run's task to end; TimeoutError after `timeout`. The task is not cancelled then (a timeout
    cancelling it would end the run as if aborted, and a test waiting for an abort would pass)."""
    assert run.task is not None
    done, _ = await asyncio.wait({run.task}, timeout=timeout)
    if not done:
        raise TimeoutError(f"run {run.id} did not end within {timeout:g}s")
    run.task.result()


def http_step(name: str, url: str, **options: Any) -> dict[str, Any]:
    retry = options.pop("retry", None)
    step: dict[str, Any] = {"name": name, "http": {"url": url, **options}}
    if retry is not None:
        step["retry"] = retry
    return step


def command_step(name: str, script: str, *args: str, **options: Any) -> dict[str, Any]:
    step: dict[str, Any] = {"name": name, "command": {"argv": [str(SCRIPTS / script), *args]}}
    for key in ("env", "retryable_exit_codes"):
        if key in options:
            step["command"][key] = options.pop(key)
    step.update(options)
    return step


async def eventually(check: Callable[[], bool], timeout: float = 10.0, what: str = "a condition") -> None:
    """Return once `check()` holds, polling it every 10 ms; TimeoutError after `timeout`. For state another
    process owns (files it writes, the process table), where there is no event to wait on."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if check():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise TimeoutError(f"{what} did not happen within {timeout:g}s") from None


def read(path: Path) -> str:
    return path.read_text()


async def read_pids(path: Path, timeout: float = 10.0) -> list[int]:
    """The pids a script wrote to `path` (it writes the file atomically), waiting until it exists."""
    await eventually(path.exists, timeout, f"{path} being written")
    return [int(pid) for pid in read(path).split()]


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped counts as gone: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_gone(pids: list[int], timeout: float = 5.0) -> None:
    await eventually(lambda: not any(alive(pid) for pid in pids), timeout, f"processes {pids} ending")


def open_journal(path: Path) -> tuple[Journal, RunJournal]:
    journal = Journal(path)
    return journal, RunJournal(journal)


def acting(config: Config, journal: Journal, bus: Bus, **options: Any) -> tuple[Engine, Runner]:
    """An engine as the daemon builds it: with a real Runner made by the engine (its steps get no HTTP session),
    acting. `options` go to the engine (`clock`, `cluster`); the runner takes the engine's clock."""
    clock = options.get("clock", time.time)
    engine = Engine(config, journal, bus, runner=lambda runs, hooks: Runner(
        runs, hooks, lambda: None, clock=clock), **options)  # type: ignore[arg-type, return-value]
    engine.act()
    assert engine.runner is not None
    return engine, engine.runner
