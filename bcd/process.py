"""Child processes run without a shell, in their own session, killed as a whole group.

Children are started with `subprocess.Popen(close_fds=True)`, not the event loop's subprocess support:
uvloop (the loop of `bcd run`) leaves its own duplicates of the child's stdio and an internal pipe
inheritable, so a plugin's backgrounded helper kept the daemon's socketpair open and the plugin looked hung.
A child gets stdin (/dev/null), stdout (a pipe) and stderr, and nothing else. Its exit is watched through a
pidfd, its output read from the pipe by the loop; both work the same under asyncio's loop and uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bcd import sighup

REAP_GRACE = 1.0
READ_CHUNK = 65536
DRAIN_READS = 64  # after the child's exit: at most this many chunks more (a grandchild may keep writing)
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True, slots=True)
class Finished:
    """How a child ended: its exit status (negative: killed by that signal) and the first bytes it wrote."""

    code: int
    output: bytes


async def run_child(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    limit: int,
    merge_stderr: bool = False,
    started: Callable[[int, int], None] | None = None,
) -> Finished:
    """Run `argv` (no shell) in its own session with only fds 0-2: stdin /dev/null, stdout a pipe, stderr
    into stdout (`merge_stderr`) or /dev/null. `started(pid, start_time)` is called once it runs (its pid
    is its process group's id). Done when the child has exited: what it wrote is read to the end of the
    pipe then, and a grandchild still holding the pipe is not waited for. Output beyond `limit` bytes is
    read and discarded. On cancellation (a timeout) the whole group is killed and the child reaped.
    Raises OSError when the child cannot be started."""
    popen = _spawn(argv, env, merge_stderr)
    try:
        child = _Child(popen)
    except BaseException:  # no pidfd (no fd left): the child must not run unwatched
        _kill_group(popen.pid)
        popen.wait()
        raise
    try:
        if started is not None:
            started(popen.pid, start_time(popen.pid) or 0)
        return await child.finish(limit)
    except BaseException:  # timeout or abort: nothing of the child may outlive it
        await child.kill()
        raise
    finally:
        child.close()


def _spawn(argv: Sequence[str], env: dict[str, str], merge_stderr: bool) -> subprocess.Popen[bytes]:
    """Start the child (vfork + exec: as quick as the loop's own subprocess support, which also blocks), with
    SIGHUP not blocked (`bcd run` blocks it in every thread of its own: bcd.sighup)."""
    with sighup.unblocked():
        return subprocess.Popen(  # argv from the config, never a shell
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else subprocess.DEVNULL,
            env=env, start_new_session=True, close_fds=True,
        )


class _Child:
    """A started child: its stdout pipe, read without blocking, and a pidfd that turns readable at exit."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None
        self.popen = popen
        self.stdout = popen.stdout.fileno()
        os.set_blocking(self.stdout, False)
        self.pidfd = os.pidfd_open(popen.pid)
        self.kept = bytearray()

    async def finish(self, limit: int) -> Finished:
        loop = asyncio.get_running_loop()
        eof = loop.create_future()
        loop.add_reader(self.stdout, self._read, limit, eof)
        try:
            await self._exited()
            code = self.popen.wait()
            for _ in range(DRAIN_READS):  # what the child wrote is in the pipe now; never wait for a grandchild
                if eof.done() or not self._read(limit, eof):
                    break
        finally:
            loop.remove_reader(self.stdout)
        return Finished(code, bytes(self.kept))

    def _read(self, limit: int, eof: asyncio.Future[None]) -> bool:
        """Read one chunk into `kept` (up to `limit`); False once the pipe is empty for now or closed."""
        try:
            chunk = os.read(self.stdout, READ_CHUNK)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.stdout)
            if not eof.done():
                eof.set_result(None)
            return False
        if len(self.kept) < limit:
            self.kept += chunk[: limit - len(self.kept)]
        return True

    async def _exited(self) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(self.pidfd, exited)
        try:
            await done
        finally:
            loop.remove_reader(self.pidfd)

    async def kill(self) -> None:
        """SIGKILL the child's whole process group (it leads its own session) and reap the child."""
        _kill_group(self.popen.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REAP_GRACE):
                await self._exited()
        self.popen.poll()

    def close(self) -> None:
        os.close(self.pidfd)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat): with the pid, it names
    one process for good, since a recycled pid starts later. None when there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def process_group(pid: int) -> int | None:
    """The process group of `pid` (field 5 of /proc/PID/stat); None when there is no such process or it is a
    zombie (it runs nothing and holds nothing but its exit status)."""
    fields = _stat(pid)
    return int(fields[2]) if fields and fields[0] not in ("Z", "X") else None


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3, the state, onwards); None if no process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rsplit(")", 1)[1].split()


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
