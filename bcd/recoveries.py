"""Recoveries: every failover, failback and drill as a timeline with its phases, measured against the RTO.

Nothing is stored twice: a recovery is derived from what the journal already holds. The run's row gives the
first failing observation of the site it leaves (`detected_at`), its start, and when the target was verified
(`verified_at`); its steps give when execution ended; the site's `site_transition` event to `down` gives when
the failure was confirmed, that is when the decision could be taken. The timeline's points, in order:

    failing ─ detection ─▶ decided ─ decision ─▶ started ─ execution ─▶ executed ─ verification ─▶ verified

- `failing`: the first failing observation of the site left (None for a move without a failure, e.g. a
  planned failback: the recovery is then measured from the decision).
- `decided`: the site confirmed `down` (its transition) before the run; the run's start when there is none.
  An automatic run starts at once, so its decision phase is about 0; an operator's is the time to react.
- `executed`: the start of the step that verified the target (a `wait_healthy` step), else the end of the
  last step before the verification.
- `verified`: the target verified healthy; None while running, or when the run did not succeed.

The phases add up to `total` (failing, or decided, to verified). The RTO is met when a verified recovery's
total is within it; `rto_met` is None when there is no RTO or nothing verified yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bcd.events import Event, EventKind, TargetVerified
from bcd.journal import Journal, RunJournal, RunRecord, StepRecord
from bcd.model import RunResult, SiteState

# A run marked by the drill runner (its evidence's `drill`) is a drill; a run of a recovery plan names it
# in its evidence's `plan`.
DRILL_KEY = "drill"
PLAN_KEY = "plan"
PHASES = ("detection", "decision", "execution", "verification")
# The transitions before a run, found without reading the service's other events (a flapping service may have
# many); partial, so only transitions (rare writes) maintain it.
TRANSITIONS_INDEX = ("CREATE INDEX IF NOT EXISTS events_transitions ON events (service, site, at) "
                     "WHERE kind = 'site_transition'")


class RecoveryKind(StrEnum):
    FAILOVER = "failover"
    FAILBACK = "failback"
    DRILL = "drill"


@dataclass(frozen=True, slots=True)
class Timeline:
    failing: float | None
    decided: float
    started: float
    executed: float | None
    verified: float | None

    def phases(self) -> dict[str, float | None]:
        """Seconds of each phase (PHASES), None where its end is not known (yet)."""
        return {
            "detection": _span(self.failing, self.decided),
            "decision": _span(self.decided, self.started),
            "execution": _span(self.started, self.executed),
            "verification": _span(self.executed, self.verified),
        }

    @property
    def total(self) -> float | None:
        """From the first failing observation (or the decision) to the target verified."""
        first = self.failing if self.failing is not None else self.decided
        return _span(first, self.verified)


@dataclass(frozen=True, slots=True)
class Recovery:
    run_id: int
    service: str
    kind: RecoveryKind
    trigger: str
    plan: str | None
    from_site: str
    to_site: str
    result: RunResult
    timeline: Timeline
    rto: float | None

    @property
    def finished(self) -> bool:
        return self.result not in (RunResult.RUNNING, RunResult.WAITING_APPROVAL)

    @property
    def rto_met(self) -> bool | None:
        total = self.timeline.total
        return None if self.rto is None or total is None else total <= self.rto

    def to_json(self) -> dict[str, Any]:
        timeline = self.timeline
        return {
            "run_id": self.run_id, "service": self.service, "kind": self.kind.value, "trigger": self.trigger,
            "plan": self.plan, "from": self.from_site, "to": self.to_site, "result": self.result.value,
            "timeline": {"failing": timeline.failing, "decided": timeline.decided, "started": timeline.started,
                         "executed": timeline.executed, "verified": timeline.verified},
            "phases": timeline.phases(), "total": timeline.total, "rto": self.rto, "rto_met": self.rto_met,
        }


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else max(0.0, end - start)


def target_verified(at: float, service: str, run_id: int, step: str, extra: Mapping[str, object]) -> Event:
    """The event a run's step journals when it has seen the target up (its `verified_site`): the recovery's
    `verified` point, as it happens."""
    site = str(extra["verified_site"])
    return Event(EventKind.TARGET_VERIFIED, at, service, site, f"run {run_id}: {site} verified up by step {step!r}",
                 TargetVerified(run_id, step))


def kind_of(run: RunRecord) -> RecoveryKind:
    return RecoveryKind.DRILL if run.evidence.get(DRILL_KEY) else RecoveryKind(run.kind.value)


def decided_at(run: RunRecord, down_at: Iterable[float]) -> float:
    """When the site left was confirmed down before the run (the latest such transition since its first
    failing observation); the run's start when it was not."""
    since = run.detected_at if run.detected_at is not None else run.started
    confirmed = [at for at in down_at if since <= at <= run.started]
    return max(confirmed, default=run.started)


def executed_at(steps: Sequence[StepRecord], started: float, verified: float | None) -> float | None:
    """When execution ended: the start of the step during which the target was verified, else the end of the
    last step that ended before it (the run's start when none did). Without verification: the end of the
    last step once every step has ended, else None."""
    if verified is None:
        ends = [step.ended for step in steps]
        return None if not ends or None in ends else max(end for end in ends if end is not None)
    for step in steps:
        if step.started <= verified and (step.ended is None or verified <= step.ended):
            return step.started
    return max((step.ended for step in steps if step.ended is not None and step.ended <= verified), default=started)


def derive(run: RunRecord, steps: Sequence[StepRecord], down_at: Iterable[float], rto: float | None) -> Recovery:
    """The recovery a run made, from its journal rows and the times its site left was confirmed down, judged
    against the RTO its evidence kept (in force when it started), else `rto` (a run from before it was kept)."""
    kept = run.evidence.get("objectives")
    if isinstance(kept, dict) and "rto" in kept:
        rto = kept["rto"]
    verified = run.verified_at if run.result is RunResult.SUCCEEDED else None
    decided = decided_at(run, down_at)
    timeline = Timeline(run.detected_at, decided, run.started, executed_at(steps, run.started, verified), verified)
    plan = run.evidence.get(PLAN_KEY)
    return Recovery(run.id, run.service, kind_of(run), run.trigger, plan if isinstance(plan, str) else None,
                    run.from_site, run.to_site, run.result, timeline, rto)


class RecoveryJournal:
    """Recoveries read from the journal: its runs (dry runs left out: nothing was recovered), their steps and
    the `site_transition` events to `down` before them."""

    def __init__(self, journal: Journal, runs: RunJournal) -> None:
        self._journal = journal
        self._runs = runs
        journal.create([TRANSITIONS_INDEX])

    def recent(self, service: str, rto: float | None, limit: int = 50) -> list[Recovery]:
        """The service's newest recoveries, newest first."""
        rows = self._journal.execute(
            "SELECT id FROM runs WHERE service = ? AND dry_run = 0 ORDER BY id DESC LIMIT ?", (service, limit)
        ).fetchall()
        return [self._derive(row[0], rto) for row in rows]

    def since(self, after: int, rto_of: Callable[[str], float | None], limit: int = 500) -> list[Recovery]:
        """Every service's recoveries with a run id above `after`, oldest first (for /metrics)."""
        rows = self._journal.execute(
            "SELECT id, service FROM runs WHERE id > ? AND dry_run = 0 ORDER BY id LIMIT ?", (after, limit)
        ).fetchall()
        return [self._derive(row[0], rto_of(row[1])) for row in rows]

    def last_id(self) -> int:
        row = self._journal.execute("SELECT max(id) FROM runs").fetchone()
        return int(row[0] or 0)

    def _derive(self, run_id: int, rto: float | None) -> Recovery:
        run = self._runs.get(run_id)
        assert run is not None  # just listed; runs are never deleted
        return derive(run, self._runs.steps(run_id), self._down_at(run), rto)

    def _down_at(self, run: RunRecord) -> list[float]:
        since = run.detected_at if run.detected_at is not None else run.started
        rows = self._journal.execute(
            "SELECT at, data FROM events WHERE service = ? AND site = ? AND kind = 'site_transition' "
            "AND at >= ? AND at <= ?", (run.service, run.from_site, since, run.started),
        ).fetchall()
        return [row[0] for row in rows if json.loads(row[1]).get("to") == SiteState.DOWN.value]
