"""The journal: the SQLite file under `state_dir` that keeps current health and status, the events, runs and
steps, chained by SHA-256 so an auditor can check it.

One idea per file: `store.py` (`Journal`: the connection, its tables and events), `runs.py` (`RunJournal`: runs
and steps), `schema.py` (the tables), `run_records.py` (runs and steps as typed records), `sync.py` (commits
made durable in groups, off the event loop), `writer.py` (the engine's group commit, and what happens when the
journal cannot be written), `ledger.py` (the hash chain: entries, seals, retention), `ledger_check.py`
(checking the chain, read-only; exporting it), `uptime.py` (the daemon's own spans, for reports).
"""

from bcd.journal.run_records import INTERRUPTED, RUN_FIELDS, RunRecord, StepRecord
from bcd.journal.runs import RunJournal
from bcd.journal.store import Journal, JournalWriteError, SavedService, SavedSite

__all__ = ["INTERRUPTED", "RUN_FIELDS", "Journal", "JournalWriteError", "RunJournal", "RunRecord", "SavedService",
           "SavedSite", "StepRecord"]
