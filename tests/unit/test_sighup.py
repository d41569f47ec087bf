"""bcd.sighup: a SIGHUP's sender as the journal names it; children of a process that blocks SIGHUP (as `bcd run`
does) are not born with it blocked; the waiting thread hands each SIGHUP to the loop with its sender."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from bcd.sighup import Sender, sender


def test_a_sender_is_named_by_pid_name_and_uid_or_without_a_name_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "comm").write_text("systemctl\n")
    assert str(sender(4242, 0, tmp_path)) == "SIGHUP from pid 4242 (systemctl, user root, uid 0)"
    unknown = 2_000_000_000  # a uid with no user
    assert str(sender(4243, unknown, tmp_path)) == f"SIGHUP from pid 4243 (uid {unknown})"  # exited, or hidden
    assert str(sender(4244, 0, tmp_path)) == "SIGHUP from pid 4244 (user root, uid 0)"
    assert str(Sender(0, 0)) == "SIGHUP from the kernel"  # the controlling terminal hung up
    assert sender(os.getpid(), os.getuid()).name == Path("/proc/self/comm").read_text().strip()


def run(script: str) -> str:
    """`script` in a fresh interpreter (the mask of this test process stays as it is)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_child_started_while_sighup_is_blocked_is_born_with_it_unblocked_and_the_parent_keeps_it_blocked() -> None:
    out = run("""
        import asyncio, signal
        from bcd import process, sighup
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})  # as `bcd run` does
        done = asyncio.run(process.run_child(["grep", "SigBlk", "/proc/self/status"], process.BASE_ENV, limit=4096))
        print(done.output.decode().split()[1], sighup.blocked())
    """)
    assert out.split() == ["0000000000000000", "True"]


def test_the_waiting_thread_hands_each_sighup_to_the_loop_with_its_sender() -> None:
    out = run("""
        import asyncio, os, pwd, signal
        from bcd import sighup
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})

        async def main():
            loop, got = asyncio.get_running_loop(), asyncio.Queue()
            assert sighup.watch(loop, got.put_nowait) is not None
            print(os.getpid(), open("/proc/self/comm").read().strip(), os.getuid(), pwd.getpwuid(os.getuid()).pw_name)
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGHUP)
                print(await asyncio.wait_for(got.get(), 10))

        asyncio.run(main())
    """)
    first, *taken = out.splitlines()
    pid, name, uid, user = first.split()
    assert taken == [f"SIGHUP from pid {pid} ({name}, user {user}, uid {uid})"] * 2


def test_a_sighup_that_comes_while_a_child_starts_goes_to_the_handler_not_lost() -> None:
    out = run("""
        import os, signal
        from bcd import sighup
        taken = []
        signal.signal(signal.SIGHUP, lambda signum, frame: taken.append(signum))  # the loop's handler, in the daemon
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        os.kill(os.getpid(), signal.SIGHUP)  # pending: no thread waits for it
        print(len(taken), end=" ")
        with sighup.unblocked():  # as while a child starts
            pass
        print(len(taken), sighup.blocked())
    """)
    assert out.split() == ["0", "1", "True"]
