"""The drills of a continuity report: each from the drill's own journaled start and end (`drill_started`,
`drill_finished`: its kind, outcome and why), with the runs that were its legs (their evidence's `drill`). A
drill's legs may all succeed while the drill fails (not back on its origin): the outcome is the drill's."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable

from bcd.drills.records import KINDS
from bcd.recoveries import DRILL_KEY, Recovery
from bcd.report.model import Drill
from bcd.run_records import RunRecord


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
    recovery plans name no service: the report lists those apart)."""
    names = "" if services is None else f" AND s.service IN ({', '.join('?' * len(services))})"
    rows = db.execute(
        "SELECT s.service, json_extract(s.data, '$.drill'), json_extract(s.data, '$.drill_kind'), s.at, "
        "json_extract(f.data, '$.result'), f.at, coalesce(f.reason, '') FROM events s LEFT JOIN events f "
        f"ON f.kind IN {KINDS} AND f.kind = 'drill_finished' AND f.service = s.service "
        "AND json_extract(f.data, '$.drill') = json_extract(s.data, '$.drill') "
        f"WHERE s.kind IN {KINDS} AND s.kind = 'drill_started' AND s.service IS NOT NULL AND s.at >= ? AND s.at < ?"
        f"{names} ORDER BY s.at, s.id", (start, end, *(services or ()))).fetchall()
    out: dict[str, tuple[Drill, ...]] = {}
    for service, drill, kind, started, result, ended, reason in rows:
        out[service] = (*out.get(service, ()), Drill(drill, kind, started, result, ended, reason,
                                                     runs_of.get(drill, ())))
    return out
