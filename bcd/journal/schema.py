"""The journal's tables (bcd.journal): health and status, events, runs and steps, and the columns added since
the first release (created on an existing database too)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS site_health (
    service TEXT NOT NULL, site TEXT NOT NULL,
    base TEXT NOT NULL, flapping INTEGER NOT NULL, maintenance_until REAL, maintenance_reason TEXT NOT NULL,
    since REAL NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (service, site)
);
CREATE TABLE IF NOT EXISTS service_state (
    service TEXT PRIMARY KEY, status TEXT NOT NULL, active TEXT NOT NULL, since REAL NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    service TEXT, site TEXT, reason TEXT NOT NULL, data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_service ON events (service, id);
"""

RUNS_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, service TEXT NOT NULL, runbook TEXT NOT NULL, kind TEXT NOT NULL,
    trigger TEXT NOT NULL, reason TEXT NOT NULL, from_site TEXT NOT NULL, to_site TEXT NOT NULL,
    dry_run INTEGER NOT NULL, forced INTEGER NOT NULL, evidence TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, result TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '',
    acknowledged_by TEXT, detected_at REAL, verified_at REAL
);
CREATE INDEX IF NOT EXISTS runs_service ON runs (service, id);
CREATE TABLE IF NOT EXISTS steps (
    run_id INTEGER NOT NULL, seq INTEGER NOT NULL, phase TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL,
    inputs TEXT NOT NULL, started REAL NOT NULL, ended REAL, attempts INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL, output TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
"""
# Columns added since the first release, created on an existing database too: (table, column, definition).
# pgid / pgid_start: a command step's process group and its leader's start time (see bcd.process).
# events seq / hash: the row's own ledger entry (bcd.journal.ledger); rows written before them have theirs in the
# ledger.
ADDED_COLUMNS = (("steps", "pgid", "INTEGER"), ("steps", "pgid_start", "INTEGER"), ("events", "seq", "INTEGER"),
                 ("events", "hash", "TEXT"))
STEP_COLUMNS = "run_id, seq, phase, name, kind, inputs, started, ended, attempts, outcome, output"
