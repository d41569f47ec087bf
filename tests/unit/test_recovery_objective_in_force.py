"""A recovery is judged against the RTO in force when its run started (kept in the run's evidence), not the one
configured when it is read: an objective raised by a later reload does not turn a miss into a success in
`bcd recoveries`, the continuity report, or bcd_recovery_objective_missed_total."""

from __future__ import annotations

from pathlib import Path

from bcd.bus import Bus
from bcd.config import parse
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.recoveries import derive
from tests.helpers.runner_kit import acting
from tests.unit.outputs.test_metrics import CONFIG
from tests.unit.test_recoveries import run


def test_the_rto_kept_in_the_evidence_wins_over_the_one_configured_now() -> None:
    missed = derive(run(evidence={"objectives": {"rto": 30.0, "rpo": None}}), [], [], 900.0)  # took 70 s
    assert (missed.rto, missed.rto_met) == (30.0, False)
    none_then = derive(run(evidence={"objectives": {"rto": None, "rpo": None}}), [], [], 900.0)
    assert (none_then.rto, none_then.rto_met) == (None, None)
    before = derive(run(), [], [], 900.0)  # a run journaled before the evidence kept it: today's RTO
    assert (before.rto, before.rto_met) == (900.0, True)


async def test_a_runs_evidence_keeps_the_objectives_in_force(tmp_path: Path) -> None:
    config = parse(CONFIG.format(state=tmp_path, extra="").replace(
        "active: dorset\n", "active: dorset\n    objectives: {rto: 2m, rpo: 1m}\n"))
    engine, _ = acting(config, Journal(tmp_path / "bcd.sqlite"), Bus())
    engine.observe(Observation(ProbeKey("payroll", "dorset", "health"), Result.OK, 0.01, "ok", 100.0))
    assert engine.evidence("payroll")["objectives"] == {"rto": 120.0, "rpo": 60.0}
