"""What the journal says about drills: each service's (and recovery plan's) last successful drill and results
(for /metrics, `BcdDrillFailed` and `BcdDrillOverdue`, again after a restart) and each scheduled drill's last
occurrence started or skipped (so an occurrence starts once, also across a restart). Read from the `drill_*`
events; a partial index keeps the reads off the rest of the journal."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any, Protocol

from bcd.journal import Journal

KINDS = "('drill_started', 'drill_finished', 'drill_skipped')"
INDEX = f"CREATE INDEX IF NOT EXISTS events_drills ON events (kind, at) WHERE kind IN {KINDS}"


class DrillJournal:
    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        journal.create([INDEX])

    def last_successes(self) -> dict[str, float]:
        """service -> when its last drill succeeded."""
        return last_successes(self._journal)

    def results(self) -> dict[tuple[str, str, str], int]:
        """Ended drills counted by (service, kind, result)."""
        rows = self._journal.execute(
            f"SELECT service, json_extract(data, '$.drill_kind'), json_extract(data, '$.result'), count(*) FROM events "
            f"WHERE kind IN {KINDS} AND kind = 'drill_finished' GROUP BY 1, 2, 3").fetchall()
        return {(row[0], row[1], row[2]): row[3] for row in rows if row[0] is not None}

    def plan_results(self) -> dict[tuple[str, str], int]:
        """Ended plan drills counted by (plan, result); the plan read from the drill's start (a drill ended
        `interrupted` at a restart names none of its own)."""
        return {(row[0], row[1]): row[2] for row in self._plan_ends("json_extract(f.data, '$.result'), count(*)",
                                                                     "GROUP BY 1, 2")}

    def plan_successes(self) -> dict[str, float]:
        """plan -> when its last drill succeeded."""
        return {row[0]: row[1] for row in self._plan_ends(
            "max(f.at)", "AND json_extract(f.data, '$.result') = 'succeeded' GROUP BY 1")}

    def _plan_ends(self, columns: str, tail: str) -> list[Any]:
        rows = self._journal.execute(
            f"SELECT json_extract(s.data, '$.plan'), {columns} FROM events f JOIN events s "
            f"ON s.kind IN {KINDS} AND s.kind = 'drill_started' "
            "AND json_extract(s.data, '$.drill') = json_extract(f.data, '$.drill') "
            f"WHERE f.kind IN {KINDS} AND f.kind = 'drill_finished' AND json_extract(f.data, '$.drill_kind') = 'plan' "
            f"{tail}").fetchall()
        return [row for row in rows if row[0] is not None]

    def last_occurrence(self, name: str) -> float | None:
        """The latest occurrence of scheduled drill `name` that was started or skipped."""
        row = self._journal.execute(
            f"SELECT max(json_extract(data, '$.occurrence')) FROM events WHERE kind IN {KINDS} "
            "AND kind IN ('drill_started', 'drill_skipped') AND json_extract(data, '$.name') = ?", (name,)).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def unfinished(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Drills started that never ended (the daemon was killed during them): (service, reason, data)."""
        rows = self._journal.execute(
            f"SELECT service, reason, data FROM events WHERE kind IN {KINDS} AND kind = 'drill_started' AND "
            "json_extract(data, '$.drill') NOT IN (SELECT json_extract(data, '$.drill') FROM events "
            f"WHERE kind IN {KINDS} AND kind = 'drill_finished')").fetchall()
        return [(row[0], row[1], json.loads(row[2])) for row in rows]

    def unannounced(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Drills whose start the journal lost (the daemon was killed within a group commit of it) but whose first
        run it holds, interrupted (a run is on disk before its first step runs): (service, reason, data) as
        `unfinished` gives them, the kind told by the run (a runbook drill's moves nothing)."""
        rows = self._journal.execute(
            "SELECT service, reason, from_site, to_site, json_extract(evidence, '$.drill'), min(id) FROM runs "
            "WHERE trigger = 'drill' AND json_extract(evidence, '$.drill') IS NOT NULL "
            "AND json_extract(evidence, '$.drill_cleanup') IS NULL AND json_extract(evidence, '$.drill') NOT IN "
            f"(SELECT json_extract(data, '$.drill') FROM events WHERE kind IN {KINDS} "
            "AND json_extract(data, '$.drill') IS NOT NULL) GROUP BY 5 HAVING sum(result = 'interrupted') > 0"
        ).fetchall()
        return [(service, reason, {"drill": drill, "drill_kind": "runbook" if origin == target else "round_trip",
                                   "by": reason.split(":", 1)[0], "from": origin, "to": target})
                for service, reason, origin, target, drill, _ in rows]

class Executes(Protocol):
    def execute(self, sql: str, params: tuple[Any, ...] = ..., /) -> sqlite3.Cursor: ...


def last_successes(db: Executes, before: float = math.inf) -> dict[str, float]:
    """service -> when its last drill that succeeded ended, before `before`: the drill's own outcome
    (`drill_finished`), not its legs' (a drill whose legs all succeeded fails when not back on its origin)."""
    rows = db.execute(
        f"SELECT service, max(at) FROM events WHERE kind IN {KINDS} AND kind = 'drill_finished' "
        "AND json_extract(data, '$.result') = 'succeeded' AND at < ? GROUP BY service", (before,)).fetchall()
    return {row[0]: row[1] for row in rows if row[0] is not None}
