"""The operations layer against a real Engine and Runner on a real SQLite journal: every action accepted, and
every refusal with its kind (what the API maps to 404/409/503) and the words the API and MQTT answer with."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.model import Guard, Observation, ProbeKey, Result, RunKind
from bcd.operations import (
    Abort,
    Accepted,
    Acknowledge,
    Approve,
    EndMaintenance,
    Intent,
    Operations,
    Refusal,
    Refused,
    StartMaintenance,
    Transfer,
)
from bcd.runbooks.runner import Runner
from tests.helpers.runner_kit import acting
from tests.helpers.sqlite_full import BIG, FullJournal

CONFIG = """
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s, rise: 1, fall: 1}}
runbooks:
  move: {{steps: [{{name: hold, approval: {{timeout: 1h}}}}]}}
services:
  payroll:
    active: dorset
    failover: {{runbook: move, mode: manual, cooldown: 0s}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
  library:
    active: hampshire
    sites:
      hampshire: {{probes: [{{name: opac, tcp: {{host: 127.0.0.1, port: 3}}}}]}}
"""
REFUSED_JOURNAL = "refused: journal cannot be written: database or disk is full"


@dataclass
class Estate:
    engine: Engine
    runner: Runner
    operations: Operations
    run: int  # a failover of payroll waiting for its approval


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    engine, runner = acting(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus())
    for site, result in (("dorset", Result.FAIL), ("hampshire", Result.OK)):
        engine.observe(Observation(ProbeKey("payroll", site, "health"), result, 0.01, str(result), 100.0))
    operations = Operations(engine)
    async with engine.bus.subscription("test") as events:
        outcome = await operations.perform(Transfer("payroll", RunKind.FAILOVER, "olive", "drill"))
        assert isinstance(outcome, Accepted) and outcome.run is not None, outcome
        async with asyncio.timeout(5):
            while (await events.get()).kind != "approval_waiting":
                pass
    yield Estate(engine, runner, operations, outcome.run.id)
    await runner.stop()


ACCEPTED: list[tuple[str, Callable[[Estate], Intent], Callable[[Estate], Accepted]]] = [
    ("acknowledge", lambda e: Acknowledge("payroll", "olive"), lambda e: Accepted("nothing to acknowledge")),
    ("maintenance start", lambda e: StartMaintenance("payroll", "dorset", 600.0, "olive", "works"),
     lambda e: Accepted("maintenance of dorset for 600s", sites=["dorset"],
                        until=e.engine.sites[("payroll", "dorset")].maintenance_until)),
    ("maintenance end", lambda e: EndMaintenance("payroll", None, "olive"),
     lambda e: Accepted("maintenance ended for no site")),
    ("approve", lambda e: Approve(e.run, "olive"), lambda e: Accepted(f"run {e.run} approved")),
    ("abort", lambda e: Abort(e.run, "olive", service="payroll"), lambda e: Accepted(f"run {e.run} aborted")),
]


@pytest.mark.parametrize(("intent", "expected"), [(i, x) for _, i, x in ACCEPTED], ids=[n for n, _, _ in ACCEPTED])
async def test_each_action_is_accepted_and_says_what_happened(
        estate: Estate, intent: Callable[[Estate], Intent], expected: Callable[[Estate], Accepted]) -> None:
    done = await estate.operations.perform(intent(estate))
    assert done == expected(estate)


async def test_a_failover_accepted_starts_its_run_and_says_where(estate: Estate) -> None:
    await estate.runner.stop()  # the run of the fixture ends (interrupted), so payroll may fail over again
    estate.engine.acknowledge("payroll", "olive", "seen")
    done = await estate.operations.perform(Transfer("payroll", RunKind.FAILOVER, "olive", "again", dry_run=True))
    assert isinstance(done, Accepted) and done.run is not None, done
    assert (done.run.to_site, done.run.dry_run) == ("hampshire", True)
    assert done.detail == f"run {done.run.id}: failover of payroll to hampshire"


REFUSALS: list[tuple[str, Callable[[Estate], Intent], Refusal, Callable[[Estate], str], Guard | None]] = [
    ("failover of an unknown service", lambda e: Transfer("nope", RunKind.FAILOVER, "olive", "x"),
     Refusal.NOT_FOUND, lambda e: "no service named 'nope'", None),
    ("failover during a run", lambda e: Transfer("payroll", RunKind.FAILOVER, "olive", "x"),
     Refusal.CONFLICT, lambda e: f"run {e.run} of payroll is in progress", Guard.RUN_IN_PROGRESS),
    ("ack of an unknown service", lambda e: Acknowledge("nope", "olive"),
     Refusal.NOT_FOUND, lambda e: "no service named 'nope'", None),
    ("maintenance of an unknown site", lambda e: StartMaintenance("payroll", "kent", 60.0, "olive"),
     Refusal.NOT_FOUND, lambda e: "payroll has no site 'kent'", None),
    ("maintenance end of an unknown site", lambda e: EndMaintenance("payroll", "kent", "olive"),
     Refusal.NOT_FOUND, lambda e: "payroll has no site 'kent'", None),
    ("approve of an unknown run", lambda e: Approve(e.run + 1, "olive"),
     Refusal.NOT_FOUND, lambda e: f"no run {e.run + 1}", None),
    ("approve naming another service", lambda e: Approve(e.run, "olive", service="library"),
     Refusal.CONFLICT, lambda e: f"run {e.run} belongs to payroll, not library", None),
    ("approve naming an unknown service", lambda e: Approve(e.run, "olive", service="nope"),
     Refusal.NOT_FOUND, lambda e: "no service named 'nope'", None),
    ("abort of an unknown run", lambda e: Abort(e.run + 1, "olive"),
     Refusal.NOT_FOUND, lambda e: f"no run {e.run + 1}", None),
]


@pytest.mark.parametrize(("intent", "kind", "reason", "guard"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
async def test_each_refusal_says_its_kind_and_why(estate: Estate, intent: Callable[[Estate], Intent], kind: Refusal,
                                                  reason: Callable[[Estate], str], guard: Guard | None) -> None:
    refused = await estate.operations.perform(intent(estate))
    assert isinstance(refused, Refused), refused
    assert (refused.kind, refused.guard) == (kind, guard)
    assert refused.reason == reason(estate)


async def test_a_run_no_longer_waiting_or_in_progress_is_refused_as_a_conflict(estate: Estate) -> None:
    assert isinstance(await estate.operations.perform(Abort(estate.run, "olive")), Accepted)
    await estate.runner.stop()
    approve = await estate.operations.perform(Approve(estate.run, "olive"))
    abort = await estate.operations.perform(Abort(estate.run, "olive"))
    assert approve == Refused(Refusal.CONFLICT, f"run {estate.run} is not waiting for approval")
    assert abort == Refused(Refusal.CONFLICT, f"run {estate.run} is not in progress")


UNWRITABLE: list[tuple[str, Callable[[Estate], Intent]]] = [
    ("failover", lambda e: Transfer("payroll", RunKind.FAILOVER, "olive", "x", force=True)),
    ("acknowledge", lambda e: Acknowledge("payroll", "olive")),
    ("maintenance start", lambda e: StartMaintenance("payroll", None, 60.0, "olive")),
    ("maintenance end", lambda e: EndMaintenance("payroll", None, "olive")),
    ("approve", lambda e: Approve(e.run, "olive")),
]


@pytest.mark.parametrize("intent", [i for _, i in UNWRITABLE], ids=[n for n, _ in UNWRITABLE])
async def test_every_action_is_refused_as_unavailable_while_the_journal_cannot_be_written(
        estate: Estate, intent: Callable[[Estate], Intent]) -> None:
    FullJournal(estate.engine.journal).fill()
    estate.engine.observe(Observation(ProbeKey("library", "hampshire", "opac"), Result.FAIL, 0.01, BIG, 101.0))
    estate.engine.writer.flush()  # the group commit, now: the change needs room the journal lacks
    assert estate.engine.writer.refusal() is not None
    refused = await estate.operations.perform(intent(estate))
    assert isinstance(refused, Refused) and refused.kind is Refusal.UNAVAILABLE, refused
    assert refused.reason.startswith(REFUSED_JOURNAL), refused.reason
    assert estate.runner.find(estate.run) is not None  # an approval refused leaves the run waiting
