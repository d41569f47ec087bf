"""Who sent a SIGHUP. The kernel tells (si_pid, si_uid) to a thread that takes the signal with `sigwaitinfo`;
an asyncio signal handler never sees it.

`bcd run` blocks SIGHUP in its main thread before anything else (`first`), before any thread starts, so every
thread inherits the mask and a SIGHUP stays pending until `watch`'s thread takes it. A child process inherits
the mask too (across fork and exec): children are started with SIGHUP unblocked in the starting thread
(`unblocked`, bcd.process). A SIGHUP that comes in that instant is taken by the event loop's own handler
instead: still a reload, its sender unknown. Without the mask (the daemon run in-process: the tests, `bcd demo`)
there is no thread and the loop's handler takes every SIGHUP.
"""

from __future__ import annotations

import asyncio
import contextlib
import pwd
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

HUP = frozenset({signal.SIGHUP})
R = TypeVar("R")
A = TypeVar("A")


def first(command: Callable[[A], R]) -> Callable[[A], R]:
    """`command` with SIGHUP blocked before its first instruction (in the main thread, before any other thread
    starts: they inherit the mask). For `bcd run` only: a client command must still die when its terminal goes."""

    def blocked_first(args: A) -> R:
        signal.pthread_sigmask(signal.SIG_BLOCK, HUP)
        return command(args)

    return blocked_first


def blocked() -> bool:
    """Whether SIGHUP is blocked in the calling thread."""
    return signal.SIGHUP in signal.pthread_sigmask(signal.SIG_BLOCK, ())


@contextlib.contextmanager
def unblocked() -> Iterator[None]:
    """SIGHUP unblocked in this thread for the duration, blocked again after if it was: around a child's start (a
    child is born with the mask of the thread that starts it, and keeps it across exec)."""
    before = signal.pthread_sigmask(signal.SIG_UNBLOCK, HUP)
    try:
        yield
    finally:
        if signal.SIGHUP in before:
            signal.pthread_sigmask(signal.SIG_BLOCK, HUP)


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent a SIGHUP: its pid and uid as the kernel gave them, its name (/proc/PID/comm) when readable, and
    the user's name when the uid has one."""

    pid: int
    uid: int
    name: str | None = None
    user: str | None = None

    def __str__(self) -> str:
        if self.pid == 0:  # sent by the kernel: the controlling terminal hung up
            return "SIGHUP from the kernel"
        who = [self.name] if self.name else []
        who += [f"user {self.user}", f"uid {self.uid}"] if self.user else [f"uid {self.uid}"]
        return f"SIGHUP from pid {self.pid} ({', '.join(who)})"


def sender(pid: int, uid: int, proc: Path = Path("/proc")) -> Sender:
    """The sender, named when its /proc/PID/comm can be read (not when it is hidden, e.g. ProtectProc=, or
    already reaped: `kill` exits at once), its user by NSS (/etc/passwd; systemd's dynamic users, e.g. the
    service's own, whose `ExecReload=` sends the signal). Never raises."""
    name = user = None
    if pid > 0:
        with contextlib.suppress(OSError, ValueError):
            name = (proc / str(pid) / "comm").read_text(errors="replace").strip() or None
        with contextlib.suppress(KeyError, OSError):
            user = pwd.getpwuid(uid).pw_name
    return Sender(pid, uid, name, user)


def watch(loop: asyncio.AbstractEventLoop, deliver: Callable[[str], object]) -> threading.Thread | None:
    """If SIGHUP is blocked here: a daemon thread (it never delays the exit) that takes each SIGHUP and calls
    `deliver("SIGHUP from pid … (name, user …, uid …)")` in `loop`. None when it is not blocked (the loop's handler
    takes it)."""
    if not blocked():
        return None
    thread = threading.Thread(target=_take, args=(loop, deliver), name="bcd-sighup", daemon=True)
    thread.start()
    return thread


def _take(loop: asyncio.AbstractEventLoop, deliver: Callable[[str], object]) -> None:
    while True:
        info = signal.sigwaitinfo(HUP)
        who = sender(info.si_pid, info.si_uid)  # at once: the sender may exit any moment
        try:
            loop.call_soon_threadsafe(deliver, str(who))
        except RuntimeError:  # the loop closed: the daemon is on its way out, nobody reloads any more
            return
