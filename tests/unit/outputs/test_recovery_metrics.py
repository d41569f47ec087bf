"""`bcd_recovery_seconds` and `bcd_recovery_objective_missed_total` count each recovery once, when a scrape
first sees it finished, even when runs finish out of order; those before the daemon started are not counted."""

from __future__ import annotations

from typing import Any, cast

from bcd.config import parse
from bcd.model import RunKind, RunResult
from bcd.outputs.metrics.recoveries import RecoveryCollector
from bcd.recoveries import Recovery, RecoveryKind, Timeline
from bcd.view import EstateView
from tests.helpers import estates


class FakeRecoveries:
    """A fake of the estate view's recoveries (the journal's runs as a list), named as such."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.recoveries: list[Recovery] = []

    def recent_runs(self, service: str | None = None, limit: int = 50) -> list[Any]:
        return [type("Run", (), {"id": r.run_id})() for r in reversed(self.recoveries)][:limit]

    def recoveries_after(self, run_id: int, limit: int = 500) -> list[Recovery]:
        return [r for r in self.recoveries if r.run_id > run_id][:limit]

    def put(self, run_id: int, result: RunResult, total: float | None = None, kind: RunKind = RunKind.FAILOVER) -> None:
        verified = None if total is None else 100.0 + total
        recovery = Recovery(run_id, "payroll", RecoveryKind(kind.value), "auto", None, "dorset", "hampshire", result,
                            Timeline(100.0, 100.0, 100.0, verified, verified), 60.0)
        self.recoveries = [r for r in self.recoveries if r.run_id != run_id] + [recovery]
        self.recoveries.sort(key=lambda r: r.run_id)


def figures(collector: RecoveryCollector) -> tuple[int, int]:
    list(collector.collect())
    counted = sum(h.count for h in collector.seconds.values())
    return counted, sum(collector.missed.values())


def test_each_recovery_is_counted_once_whatever_order_runs_finish_in(tmp_path: Any) -> None:
    text = estates.payroll(tmp_path, step="{name: s, sleep: {duration: 1s}}", mode="auto")
    config = parse(text.replace("    active: dorset\n", "    active: dorset\n    objectives: {rto: 1m}\n"))
    fake = FakeRecoveries(config)
    fake.put(1, RunResult.SUCCEEDED, 10.0)  # before the daemon started: history, not counted
    collector = RecoveryCollector(cast(EstateView, fake))
    assert figures(collector) == (0, 0)
    fake.put(2, RunResult.RUNNING)
    fake.put(3, RunResult.SUCCEEDED, 90.0)  # finishes while run 2 still runs; misses the 1m RTO
    assert figures(collector) == (1, 1)
    assert figures(collector) == (1, 1)  # seen again: not counted again
    fake.put(2, RunResult.FAILED)  # finished, not verified: no time, no verdict
    fake.put(4, RunResult.SUCCEEDED, 20.0, RunKind.FAILBACK)
    assert figures(collector) == (2, 1)
    assert figures(collector) == (2, 1)
    assert collector.seconds[("payroll", "failback")].count == 1
    text = "".join(collector.parts())
    assert 'bcd_recovery_objective_missed_total{service="payroll",kind="failover"} 1\n' in text
    assert 'bcd_recovery_objective_missed_total{service="payroll",kind="failback"} 0\n' in text
    assert 'bcd_objective_seconds{service="payroll",objective="rto"} 60.0\n' in text
    assert "objective=\"rpo\"" not in text  # none configured
    fake.put(5, RunResult.SUCCEEDED, 70.0, RunKind.FAILBACK)
    assert figures(collector) == (3, 2)
    assert 'bcd_recovery_objective_missed_total{service="payroll",kind="failback"} 1\n' in "".join(collector.parts())
