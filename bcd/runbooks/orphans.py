"""Process groups that runbook steps left running when the daemon died (kill -9, a crash): found from the
journal at start, reported in the interrupted run, and ended unless `runner.kill_orphans` is false.

A group is named by its leader's pid and start time (bcd.process.start_time), so a recycled pid is never
taken for it: when the leader runs with another start time the group is someone else's; when the leader has
gone, only members that started after it count (the kernel keeps a group's id from being reused while any
member lives). Signals go through pidfds opened and checked first, so no signal can reach a recycled pid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bcd.journal import RunJournal, RunRecord
from bcd.process import process_group, start_time

log = structlog.get_logger("bcd.runner")

TERM_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
KILL_WAIT = 1.0


@dataclass(frozen=True, slots=True)
class Orphan:
    """A process group a step of a crashed run left behind, and what became of it."""

    seq: int
    step: str
    pgid: int
    started: int  # the leader's start time, as journaled
    pids: tuple[int, ...]
    names: tuple[str, ...]
    left: tuple[int, ...] = ()  # still alive after bcd was done with them

    def note(self, killed: bool) -> str:
        """One line for the run's detail, the step's output and the log."""
        members = ", ".join(f"{pid} ({name})" for pid, name in zip(self.pids, self.names, strict=True))
        said = f"step {self.seq} {self.step!r} left process group {self.pgid} running: {members}"
        if not killed:
            return f"{said}; not terminated (runner.kill_orphans is false)"
        if self.left:
            return f"{said}; still alive after SIGKILL: {', '.join(map(str, self.left))}"
        return f"{said}; terminated"


def settle(journal: RunJournal, record: RunRecord, *, kill: bool) -> dict[int, str]:
    """For an interrupted run: step seq → what became of the process group that step left running (found
    from the journal; terminated when `kill`), each also logged as `orphan_process_group`."""
    notes: dict[int, str] = {}
    for seq, step, pgid, started in journal.unfinished_processes(record.id):
        orphan = find(seq, step, pgid, started)
        if orphan is None:
            continue
        if kill:
            orphan = terminate(orphan)
        notes[seq] = orphan.note(kill)
        log.warning("orphan_process_group", run_id=record.id, service=record.service, step=step, pgid=pgid,
                    pids=list(orphan.pids), terminated=kill, left=list(orphan.left), detail=notes[seq])
    return notes


def find(seq: int, step: str, pgid: int, started: int) -> Orphan | None:
    """The journaled group `pgid` (leader started at `started`) if any of it still runs, else None."""
    pids = sorted(members(pgid, started))
    if not pids:
        return None
    return Orphan(seq, step, pgid, started, tuple(pids), tuple(_name(pid) for pid in pids))


def members(pgid: int, started: int) -> dict[int, int]:
    """Live processes (pid → start time) of the group the step started: none when the pid `pgid` now runs
    with another start time (recycled: a different group); else those in group `pgid` that started at or
    after the leader."""
    leader = start_time(pgid)
    if leader is not None and leader != started:
        return {}
    found = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and process_group(pid := int(entry.name)) == pgid:
            began = start_time(pid)
            if began is not None and began >= started:
                found[pid] = began
    return found


def terminate(orphan: Orphan) -> Orphan:
    """SIGTERM the orphan's processes, SIGKILL what is left after TERM_GRACE (members forked meanwhile
    included); returns it with `left` set to what still runs."""
    _signal_and_wait(members(orphan.pgid, orphan.started), signal.SIGTERM, TERM_GRACE)
    left = _signal_and_wait(members(orphan.pgid, orphan.started), signal.SIGKILL, KILL_WAIT)
    return dataclasses.replace(orphan, left=tuple(left))


def _signal_and_wait(processes: dict[int, int], signum: int, wait: float) -> list[int]:
    """Send `signum` to each process (pid → start time) through a pidfd, checked to still name that
    process, and wait up to `wait` seconds for them to end; returns the pids still running. Blocks: it
    runs once at start, before probes and runs."""
    fds: dict[int, int] = {}
    try:
        for pid, began in processes.items():
            with contextlib.suppress(ProcessLookupError):
                fd = os.pidfd_open(pid)
                if start_time(pid) != began:  # ended (and maybe recycled) before the pidfd was opened
                    os.close(fd)
                    continue
                fds[fd] = pid
        poller = select.poll()
        for fd in fds:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signum)
            poller.register(fd, select.POLLIN)
        running = set(fds)
        deadline = time.monotonic() + wait
        while running and (remaining := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(remaining * 1000):
                running.discard(fd)
                poller.unregister(fd)
        return sorted(fds[fd] for fd in running)
    finally:
        for fd in fds:
            os.close(fd)


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
