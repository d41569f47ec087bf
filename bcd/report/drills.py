"""The drills of a continuity report: each from the drill's own journaled start and end (`drill_started`,
`drill_finished`: its kind, outcome and why), with the runs that were its legs (their evidence's `drill`). A
drill's legs may all succeed while the drill fails (not back on its origin): the outcome is the drill's."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable

from bcd.drills.records import KINDS
from bcd.journal.run_records import RunRecord
from bcd.recoveries import DRILL_KEY, Recovery
from bcd.report.model import Drill


def legs(runs: Iterable[RunRecord], recoveries: Iterable[Recovery]) -> dict[str, tuple[Recovery, ...]]:
    """The recoveries of drill legs, by drill id (from each run's evidence)."""
    drill_of = {run.id: str(run.evidence[DRILL_KEY]) for run in runs if run.evidence.get(DRILL_KEY)}
    out: dict[str, tuple[Recovery, ...]] = {}
    for recovery in recoveries:
        if recovery.run_id in drill_of:
            out[drill_of[recovery.run_id]] = (*out.get(drill_of[recovery.run_id], ()), recovery)
    return out


def service_drills(db: sqlite3.Connection, start: float, end: float, services: Collection[str] | None,
                   runs_of: dict[str, tuple[Recovery, ...]]) -> dict[str, tuple[Drill, ...]]:
    """Each service's drills started in [start, end), oldest first, with their end when they have one (drills of
    recovery plans name no service: the report lists those apart). Starts and ends are read in one pass each
    and matched here (the daemon's partial index `events_drills` finds them; without it, still one scan)."""
    names = "" if services is None else f" AND service IN ({', '.join('?' * len(services))})"
    where = f"kind IN {KINDS} AND kind = ? AND service IS NOT NULL AND at >= ?{names}"
    ends = {drill: (result, at, reason) for drill, result, at, reason in db.execute(
        "SELECT json_extract(data, '$.drill'), json_extract(data, '$.result'), at, reason FROM events "
        f"WHERE {where} ORDER BY id", ("drill_finished", start, *(services or ())))}
    out: dict[str, tuple[Drill, ...]] = {}
    for service, drill, kind, at in db.execute(
            "SELECT service, json_extract(data, '$.drill'), json_extract(data, '$.drill_kind'), at FROM events "
            f"WHERE {where} AND at < ? ORDER BY at, id", ("drill_started", start, *(services or ()), end)):
        result, ended, reason = ends.get(drill, (None, None, ""))
        out[service] = (*out.get(service, ()), Drill(drill, kind, at, result, ended, reason, runs_of.get(drill, ())))
    return out
