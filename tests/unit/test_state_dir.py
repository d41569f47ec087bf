"""state_dir at start-up, on real files: the lock (one holder, its pid named, released on close and when
the holder dies), a lost journal set aside, and a journal file that is checked before it is used."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bcd.journal import Journal
from bcd.state_dir import StateDirError, StateLock, open_database, set_aside_lost_journal
from tests.helpers.files import immutable

NOON = 1_780_000_000.0  # 2026-05-28T20:26:40Z
STAMP = "20260528T202640Z"


def test_the_lock_file_holds_the_pid_and_a_second_lock_names_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = StateLock.acquire(state)
    assert (state / "bcd.lock").read_text() == f"{os.getpid()}\n"
    assert not lock.existed
    with pytest.raises(StateDirError) as refused:
        StateLock.acquire(state)  # flock conflicts between two opens even in one process
    assert str(refused.value) == (
        f"state_dir {state} is in use by another bcd (pid {os.getpid()}, which holds {state / 'bcd.lock'}): "
        "stop that daemon first, or give this one its own state_dir")
    lock.release()
    lock.release()  # idempotent
    again = StateLock.acquire(state)
    assert again.existed
    again.release()


def test_a_lock_held_by_another_process_names_it_and_dies_with_it(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from bcd.state_dir import StateLock; "
         "StateLock.acquire(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
            with pytest.raises(StateDirError, match=f"in use by another bcd \\(pid {holder.pid}, "):
                StateLock.acquire(tmp_path)
        finally:
            holder.kill()  # SIGKILL: no clean-up in the holder; the kernel drops the lock
    StateLock.acquire(tmp_path).release()


def test_a_child_process_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A runbook step's process that outlives the daemon (kill -9) must not keep the next daemon out."""
    lock = StateLock.acquire(tmp_path)
    sleeper = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"]
    with subprocess.Popen(sleeper, close_fds=False, stdout=subprocess.PIPE, text=True) as child:
        try:
            # once it runs: the kernel closes close-on-exec descriptors a moment after vfork's parent resumes
            assert child.stdout is not None and child.stdout.readline() == "up\n"
            lock.release()
            StateLock.acquire(tmp_path).release()
        finally:
            child.kill()


def test_a_state_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDirError, match=r"^cannot write .*file/state \(Not a directory\): the state_dir"):
        StateLock.acquire(tmp_path / "file" / "state")


def test_a_brand_new_state_dir_sets_nothing_aside_and_says_nothing(tmp_path: Path) -> None:
    lock = StateLock.acquire(tmp_path)
    with capture_logs() as logs:
        assert set_aside_lost_journal(tmp_path / "bcd.sqlite", lock, NOON) is None
    assert logs == []
    lock.release()


def test_an_empty_journal_and_its_wal_are_set_aside_under_names_sqlite_pairs(tmp_path: Path) -> None:
    journal = tmp_path / "bcd.sqlite"
    journal.write_bytes(b"")
    (tmp_path / "bcd.sqlite-wal").write_bytes(b"wal")
    lock = StateLock.acquire(tmp_path)
    with capture_logs() as logs:
        kept = set_aside_lost_journal(journal, lock, NOON)
    assert kept == tmp_path / f"bcd.sqlite.empty-{STAMP}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bcd.lock", f"bcd.sqlite.empty-{STAMP}", f"bcd.sqlite.empty-{STAMP}-wal"]
    (line,) = logs
    assert (line["event"], line["log_level"], line["journal"], line["kept"]) == (
        "journal_lost", "error", str(journal), str(kept))
    assert line["reason"].startswith("the journal was empty (0 bytes): kept aside as ")
    lock.release()


def test_a_second_empty_journal_in_the_same_second_does_not_replace_the_first(tmp_path: Path) -> None:
    journal = tmp_path / "bcd.sqlite"
    lock = StateLock.acquire(tmp_path)
    kept = []
    for wal in (b"first", b"second"):
        journal.write_bytes(b"")
        (tmp_path / "bcd.sqlite-wal").write_bytes(wal)
        with capture_logs():
            kept.append(set_aside_lost_journal(journal, lock, NOON))
    assert kept == [tmp_path / f"bcd.sqlite.empty-{STAMP}", tmp_path / f"bcd.sqlite.empty-{STAMP}.1"]
    assert [Path(f"{path}-wal").read_bytes() for path in kept] == [b"first", b"second"]
    lock.release()


def test_wal_files_without_their_journal_are_set_aside(tmp_path: Path) -> None:
    (tmp_path / "bcd.sqlite-shm").write_bytes(b"shm")
    lock = StateLock.acquire(tmp_path)
    with capture_logs() as logs:
        kept = set_aside_lost_journal(tmp_path / "bcd.sqlite", lock, NOON)
    assert kept is not None and not kept.exists()  # nothing to keep but the side file
    assert (tmp_path / f"bcd.sqlite.empty-{STAMP}-shm").read_bytes() == b"shm"
    assert [line["event"] for line in logs] == ["journal_lost"]
    assert "was missing, its WAL/SHM files were left" in logs[0]["reason"]
    lock.release()


def test_a_journal_gone_from_a_used_state_dir_is_reported(tmp_path: Path) -> None:
    StateLock.acquire(tmp_path).release()  # an earlier daemon's lock file
    lock = StateLock.acquire(tmp_path)
    with capture_logs() as logs:
        assert set_aside_lost_journal(tmp_path / "bcd.sqlite", lock, NOON) is None
    assert [(line["event"], line["log_level"]) for line in logs] == [("journal_missing", "error")]
    lock.release()


def test_a_good_journal_is_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "bcd.sqlite"
    Journal(journal).close()
    lock = StateLock.acquire(tmp_path)
    with capture_logs() as logs:
        assert set_aside_lost_journal(journal, lock, NOON) is None
    assert logs == []
    lock.release()


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    path.write_bytes(b"garbage\n" * 1000)
    with pytest.raises(StateDirError) as refused:
        open_database(path)
    assert str(refused.value) == (
        f"the journal {path} is not a usable SQLite database (file is not a database): restore it from a backup, "
        "or move it (and any -wal/-shm files beside it) aside to start afresh with every service on its home site")


def test_a_database_whose_pages_are_damaged_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x TEXT)")
    db.executemany("INSERT INTO t VALUES (?)", [("x" * 200,)] * 500)
    db.commit()
    db.close()
    with path.open("r+b") as raw:  # the header stays valid; a table page in the middle is overwritten
        raw.seek(4096 * 3)
        raw.write(b"\xff" * 4096)
    with pytest.raises(StateDirError, match=f"^the journal {re.escape(str(path))} is not a usable SQLite database \\("):
        open_database(path)


def test_an_unwritable_journal_is_refused_not_opened_read_only(tmp_path: Path) -> None:
    path = tmp_path / "bcd.sqlite"
    Journal(path).close()
    with immutable(path), pytest.raises(StateDirError) as refused:
        open_database(path)
    assert re.fullmatch(f"cannot write {re.escape(str(path))} \\(.+\\): the state_dir and the files in it .*", str(refused.value))
