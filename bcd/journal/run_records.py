"""What the journal holds about runs and steps, as typed records (the rows of `runs` and `steps`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bcd.model import Guard, RunKind, RunResult


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: int
    seq: int
    phase: str
    name: str
    kind: str
    inputs: dict[str, Any]
    started: float
    ended: float | None
    attempts: int
    outcome: str
    output: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "phase": self.phase, "name": self.name, "kind": self.kind, "inputs": self.inputs,
            "started": self.started, "ended": self.ended, "attempts": self.attempts, "outcome": self.outcome,
            "output": self.output,
        }


@dataclass(frozen=True, slots=True, init=False)
class RunRecord:
    """One run as the journal holds it (`id` 0 before it is written)."""

    id: int
    service: str
    runbook: str
    kind: RunKind
    trigger: str
    reason: str
    from_site: str
    to_site: str
    dry_run: bool
    forced: bool
    evidence: dict[str, Any]
    started: float
    ended: float | None
    result: RunResult
    detail: str
    acknowledged_by: str | None
    detected_at: float | None
    verified_at: float | None

    def __init__(  # noqa: PLR0917 - positional: the journal's row order
        self, id: int, service: str, runbook: str, kind: RunKind | str, trigger: str, reason: str,
        from_site: str, to_site: str, dry_run: bool, forced: bool, evidence: dict[str, Any], started: float,
        ended: float | None, result: RunResult | str, detail: str, acknowledged_by: str | None,
        detected_at: float | None, verified_at: float | None,
    ) -> None:
        """`kind` and `result` as strings too (ValueError for one no RunKind/RunResult has): the journal's
        columns, and bcd/cluster's mirrored runs until it builds them typed."""
        values = locals()
        values.update(kind=RunKind(kind), result=RunResult(result))
        for name in RUN_FIELDS:
            object.__setattr__(self, name, values[name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "service": self.service, "runbook": self.runbook, "kind": self.kind.value,
            "trigger": self.trigger, "reason": self.reason, "from": self.from_site, "to": self.to_site,
            "dry_run": self.dry_run, "forced": self.forced, "evidence": self.evidence, "started": self.started,
            "ended": self.ended, "result": self.result.value, "detail": self.detail,
            "acknowledged_by": self.acknowledged_by, "detected_at": self.detected_at, "verified_at": self.verified_at,
        }


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the engine's decisions need of a service's runs, cached per service (bcd.engine)."""

    unacknowledged: tuple[str, Guard] | None  # the run waiting for an acknowledgement, and its guard
    last_ended: float | None
    last_dry_run: float | None


NO_RUNS = RunFacts(None, None, None)  # a service that has never run (most): one shared object
RUN_FIELDS = tuple(RunRecord.__slots__)
INTERRUPTED = "the daemon stopped during this run; no step was re-run"
run_columns = (
    "id, service, runbook, kind, trigger, reason, from_site, to_site, dry_run, forced, evidence, started, ended, "
    "result, detail, acknowledged_by, detected_at, verified_at"
)


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    values = dict(zip(RUN_FIELDS, row, strict=True))
    values.update(dry_run=bool(values["dry_run"]), forced=bool(values["forced"]),
                  evidence=json.loads(values["evidence"]))
    return RunRecord(**values)
