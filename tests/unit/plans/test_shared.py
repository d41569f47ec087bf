"""Plan runs shared through etcd, as the runner keeps them in its journal: a newer version of a run replaces the
one journaled here, an older one never does, and a run still open whose holder lost the plan's lock is shown
`interrupted` (any instance may resume it). The records come from a stub standing in for the etcd lock and
watch (tests/integration/cluster/test_plans_cluster.py runs the same against a real etcd)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.operations import Operations, Refusal, Refused, RunPlan
from bcd.plans.lock import SharedRun
from bcd.plans.model import Move, MoveState, PlanRun, PlanState
from bcd.plans.runner import PlanRunner
from bcd.view import EngineView
from tests.unit.plans.test_runner import PROBES, RUNBOOKS, services_yaml


@dataclass
class StubShared:
    """The plans' records as a stub etcd watch would give them (no locks are ever taken here)."""

    records: list[SharedRun] = field(default_factory=list)
    vantage: str = "hampshire"
    executor: bool = True
    reads: int = 0
    grace: float = 0.0

    def defer_to(self, to_site: str) -> str | None:
        return None

    async def take(self, plan: str) -> tuple[int | None, str | None]:
        return None, "the instance at vantage dorset"

    async def release(self, plan: str) -> None:
        return None

    def holds(self, plan: str) -> bool:
        return False

    async def publish(self, run: PlanRun) -> bool:
        return False

    def shared(self) -> list[SharedRun]:
        return self.records

    @property
    def version(self) -> int:
        self.reads += 1  # every read finds the records changed
        return self.reads


def runner(tmp_path: Path, shared: StubShared | None, trigger: str = "manual", sites: str = "dorset, to: hampshire",
           ) -> PlanRunner:
    text = (f"state_dir: {tmp_path}\nsites: {{dorset: {{}}, hampshire: {{}}}}\n{RUNBOOKS}"
            f"{services_yaml({'a': [], 'b': []}, PROBES)}"
            f"plans:\n  evacuate: {{from: {sites}, trigger: {trigger}}}\n")
    engine = Engine(parse(text), Journal(tmp_path / "bcd.sqlite"), Bus())
    return PlanRunner(engine.journal, Operations(engine), EngineView(engine), engine.emit, lock=shared)


RUN = PlanRun(41, "evacuate", "dorset", "hampshire", "olive", "drill", False, 100.0, PlanState.RUNNING,
              (Move("a", 1, MoveState.MOVED, run_id=3, run_name="dorset:3"), Move("b", 1, MoveState.MOVING)),
              holder="dorset", token=41, seq=5)


def test_a_shared_run_is_kept_here_newer_versions_replace_it_older_ones_never(tmp_path: Path) -> None:
    shared = StubShared([SharedRun(RUN, held=True)])
    plans = runner(tmp_path, shared)
    plans.shared.adopt_shared()
    kept = plans.journal.get(41)
    assert kept is not None and (kept.state, kept.holder, kept.version) == (PlanState.RUNNING, "dorset", (41, 5))
    assert kept.move("a") == Move("a", 1, MoveState.MOVED, run_id=None, run_name="dorset:3")  # not mirrored here yet

    shared.records = [SharedRun(replace(RUN, seq=4, state=PlanState.FAILED), held=True)]  # older: ignored
    plans.shared.adopt_shared()
    assert plans.journal.get(41) == kept

    shared.records = [SharedRun(RUN, held=False)]  # its holder's lease lapsed
    plans.shared.adopt_shared()
    kept = plans.journal.get(41)
    assert kept is not None and kept.state is PlanState.INTERRUPTED
    assert kept.detail == ("the instance at vantage dorset lost the plan's lock during this run: bcd plan resume 41 "
                           "(on any instance)")

    resumed = replace(RUN, holder="kent", token=57, seq=1, state=PlanState.SUCCEEDED, ended=130.0)
    shared.records = [SharedRun(resumed, held=False)]
    plans.shared.adopt_shared()
    assert plans.journal.get(41) == replace(resumed, moves=(replace(RUN.moves[0], run_id=None), RUN.moves[1]))


async def test_a_plan_with_an_open_run_elsewhere_cannot_start_another_here(tmp_path: Path) -> None:
    plans = runner(tmp_path, StubShared([SharedRun(RUN, held=True)]))
    plans.shared.adopt_shared()
    plans.start()
    refused = await plans.perform(RunPlan("evacuate", "olive", "again"))
    await plans.stop()
    assert refused == Refused(Refusal.CONFLICT, "plan evacuate is running elsewhere: its lock is held by the "
                                                "instance at vantage dorset")


async def test_a_witness_starts_no_plan_run(tmp_path: Path) -> None:
    plans = runner(tmp_path, StubShared(executor=False, vantage="witness"), trigger="auto")
    plans.start()
    refused = await plans.perform(RunPlan("evacuate", "olive", "drill"))
    await plans.stop()
    assert refused == Refused(Refusal.CONFLICT, "this instance (witness) runs no runbook (cluster.executor: false): "
                                                "ask an executing instance")
    assert await plans.site_lost("dorset", "site dorset lost: every service probed there is down") == [Refused(
        Refusal.CONFLICT, "this instance (witness) runs no runbook (cluster.executor: false): an executing instance "
                          "starts it")]


async def test_an_auto_plan_with_nothing_to_move_does_not_start(tmp_path: Path) -> None:
    plans = runner(tmp_path, None, trigger="auto", sites="hampshire, to: dorset")  # every service is on dorset
    assert await plans.site_lost("hampshire", "site hampshire lost: every service probed there is down") == [
        Refused(Refusal.CONFLICT, "nothing to move: no service of plan evacuate is active on hampshire (moved "
                                  "already?)")]
    assert plans.journal.recent() == []
