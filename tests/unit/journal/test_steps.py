"""The steps table on a real SQLite file: a journal written before process groups were recorded opens,
keeps its steps, and records a step's process group from then on."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from bcd.journal import Journal, RunJournal

OLD_STEPS = """
CREATE TABLE steps (
    run_id INTEGER NOT NULL, seq INTEGER NOT NULL, phase TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    inputs TEXT NOT NULL, started REAL NOT NULL, ended REAL, attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL, output TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
)"""


def test_an_existing_steps_table_gains_the_process_group_columns(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(OLD_STEPS)
        db.execute("INSERT INTO steps VALUES (1, 1, 'main', 'fence', 'command', '{}', 5.0, NULL, 0, 'running', '')")
        db.commit()
    journal = Journal(path)
    runs = RunJournal(journal)
    (old,) = runs.steps(1)
    assert (old.name, old.outcome, old.ended) == ("fence", "running", None)
    assert runs.unfinished_processes(1) == []  # journaled before groups were: nothing to look for
    runs.step_process(1, 1, 4242, 987654)
    assert runs.unfinished_processes(1) == [(1, "fence", 4242, 987654)]
    runs.mark_interrupted(1, 9.0, "stopped; step 1 left a group", {1: "left a group"})
    assert runs.unfinished_processes(1) == []
    (step,) = runs.steps(1)
    assert (step.outcome, step.ended, step.output) == ("interrupted", 9.0, "left a group")
    journal.close()
    RunJournal(Journal(path)).steps(1)  # opening again adds nothing twice
    with contextlib.closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(steps)")]
    assert columns[-3:] == ["output", "pgid", "pgid_start"]
