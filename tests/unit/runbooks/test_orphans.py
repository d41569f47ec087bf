"""Finding and ending a journaled process group with real processes: the group is named by its leader's pid
and start time, so a group whose leader's pid now names another process is left alone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bcd.process import start_time
from bcd.runbooks import orphans


def gone(pid: int) -> bool:
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    return True


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Children started by a test (each in its own session); killed and reaped at the end."""
    children: list[subprocess.Popen[bytes]] = []
    yield children
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def session(spawned: list[subprocess.Popen[bytes]], *argv: str) -> tuple[int, int]:
    child = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.PIPE)
    spawned.append(child)
    started = start_time(child.pid)
    assert started is not None
    return child.pid, started


def test_a_surviving_group_is_found_and_terminated(spawned: list[subprocess.Popen[bytes]]) -> None:
    pid, started = session(spawned, "/bin/sleep", "300")
    orphan = orphans.find(3, "fence", pid, started)
    assert orphan is not None
    assert (orphan.pids, orphan.names) == ((pid,), ("sleep",))
    ended = orphans.terminate(orphan)
    assert ended.left == ()
    assert gone(pid)
    assert ended.note(killed=True) == f"step 3 'fence' left process group {pid} running: {pid} (sleep); terminated"
    assert orphans.find(3, "fence", pid, started) is None


def test_a_pid_with_another_start_time_is_another_process(spawned: list[subprocess.Popen[bytes]]) -> None:
    pid, started = session(spawned, "/bin/sleep", "300")
    assert orphans.find(1, "fence", pid, started - 1) is None  # as if the journaled leader's pid were recycled
    assert not gone(pid)


def test_members_outlive_their_leader(spawned: list[subprocess.Popen[bytes]]) -> None:
    pid, started = session(spawned, "/bin/sh", "-c", "/bin/sleep 300 & echo $!")
    assert spawned[0].stdout is not None
    member = int(spawned[0].stdout.readline())
    spawned[0].wait()  # the leader has exited and been reaped: its group lives on in the sleep
    orphan = orphans.find(1, "fence", pid, started)
    assert orphan is not None and orphan.pids == (member,)
    assert orphans.terminate(orphan).left == ()
    assert gone(member)  # terminate() returned once it had ended (a zombie until its new parent reaps it)
