"""The files under `state_dir`, as a daemon starts: one daemon per directory, and a journal file that is
either usable, or set aside loudly, or refused with a one-line error naming the file and what to do.

- `bcd.lock` holds an exclusive `flock` for as long as the daemon lives (the kernel drops it when the process
  ends, even after kill -9, so a stale file never blocks a restart) and the holder's pid, for the message a
  second daemon prints. The file is never deleted: deleting a lock file lets two processes lock two files.
- `bcd.sqlite` (with its `-wal` and `-shm` files while open): a 0-byte journal, or WAL/SHM files without
  one, mean a journal existed and was lost; what is left is renamed, never reused silently.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

import structlog

log = structlog.get_logger("bcd.state_dir")

LOCK_NAME = "bcd.lock"
JOURNAL_NAME = "bcd.sqlite"
SIDE_SUFFIXES = ("-wal", "-shm")  # SQLite's names: a renamed journal keeps them, so SQLite still pairs them
_CORRUPT = frozenset({"SQLITE_NOTADB", "SQLITE_CORRUPT"})


class StateDirError(Exception):
    """The state_dir cannot be used. `str()` is one line naming the file and what to do."""


class StateLock:
    """An exclusive lock on `state_dir`, held until `release()` or the end of the process."""

    def __init__(self, path: Path, fd: int, existed: bool) -> None:
        self.path = path
        self.existed = existed  # the lock file was there before: a bcd has used this state_dir before
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Create `state_dir` if needed and lock it; raise StateDirError if another process holds the lock
        (naming its pid) or the directory cannot be written."""
        path = state_dir / LOCK_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            existed = path.exists()
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise not_writable(state_dir, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateDirError(
                f"state_dir {state_dir} is in use by another bcd (pid {holder}, which holds {path}): "
                "stop that daemon first, or give this one its own state_dir"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise not_writable(path, exc) from exc
        return cls(path, fd, existed)

    def release(self) -> None:
        """Unlock (idempotent). The file stays, for the next daemon."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def not_writable(path: Path, exc: OSError | sqlite3.Error) -> StateDirError:
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return StateDirError(
        f"cannot write {path} ({detail}): the state_dir and the files in it must be writable by "
        "the user bcd runs as (check ownership, permissions, a read-only mount, free space)"
    )


def set_aside_lost_journal(journal: Path, lock: StateLock, now: float | None = None) -> Path | None:
    """Before the journal opens: if it was lost — a 0-byte file, or WAL/SHM files without it — rename what
    is left to `<journal>.empty-<UTC time>` (its WAL/SHM files alongside, under SQLite's names) and log an
    error naming both paths; the daemon then starts afresh. Returns the new name, or None when nothing
    was set aside. A journal missing from a state_dir whose lock file was already there is logged too.
    A brand-new state_dir is quiet. Raises StateDirError if the files cannot be renamed."""
    try:
        if journal.exists() and journal.stat().st_size > 0:
            return None  # a journal: open_database checks it
        empty = journal.exists()
        leftovers = [side for side in _sides(journal) if side.exists()]
        if not empty and not leftovers:
            if lock.existed:
                log.error("journal_missing", journal=str(journal), lock=str(lock.path),
                          reason="a bcd used this state_dir before (its lock file is there) but its journal is "
                                 "gone: starting afresh, every service on its home site, no run history",
                          hint="restore the journal from a backup if you have one, then restart")
            return None
        kept = _unused(journal.with_name(f"{journal.name}.empty-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}"))
        if empty:
            journal.rename(kept)
        for side in leftovers:
            side.rename(kept.with_name(kept.name + side.name[len(journal.name):]))
    except OSError as exc:
        raise not_writable(journal.parent, exc) from exc
    what = "was empty (0 bytes)" if empty else "was missing, its WAL/SHM files were left"
    log.error("journal_lost", journal=str(journal), kept=str(kept),
              reason=f"the journal {what}: kept aside as {kept}; starting afresh, every service's active site "
                     "reset to its home site, runs and events before this start are not in the new journal",
              hint="check each service's active site now; restore the journal from a backup if you have one")
    return kept


def _sides(journal: Path) -> list[Path]:
    return [journal.with_name(journal.name + suffix) for suffix in SIDE_SUFFIXES]


def _unused(name: Path) -> Path:
    """`name`, or `name.N`: a rename must never replace what an earlier start set aside."""
    candidate, n = name, 1
    while candidate.exists() or any(side.exists() for side in _sides(candidate)):
        candidate, n = name.with_name(f"{name.name}.{n}"), n + 1
    return candidate


def open_database(path: Path) -> sqlite3.Connection:
    """Open (or create) the SQLite file at `path` in WAL mode with full sync, checked: raise StateDirError
    if it is not a database, fails `PRAGMA quick_check`, or cannot be written."""
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _refusal(path, exc) from exc
    try:
        _check(db, path)
    except BaseException:
        db.close()
        raise
    return db


def _check(db: sqlite3.Connection, path: Path) -> None:
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise StateDirError(corrupt(path, f"quick_check: {'; '.join(problems[:3])}"))
        # SQLite opens a file it cannot write read-only without a word: write (and roll back) to find out
        db.execute("BEGIN IMMEDIATE")
        db.execute("CREATE TABLE bcd_write_check (x)")
        db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise _refusal(path, exc) from exc


def _refusal(path: Path, exc: sqlite3.Error) -> StateDirError:
    if getattr(exc, "sqlite_errorname", "") in _CORRUPT:
        return StateDirError(corrupt(path, str(exc)))
    return not_writable(path, exc)


def corrupt(path: Path, detail: str) -> str:
    return (f"the journal {path} is not a usable SQLite database ({detail}): restore it from a backup, or move "
            "it (and any -wal/-shm files beside it) aside to start afresh with every service on its home site")
