"""Child processes run without a shell, in their own session, killed as a whole group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

REAP_GRACE = 1.0
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


async def read_bounded(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything up to EOF, keeping the first `limit` bytes (the rest is drained so the writer never
    blocks on a full pipe)."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[: limit - len(kept)]
    return bytes(kept)


async def kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group (it leads its own session) and reap the child."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REAP_GRACE):
            await process.wait()


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
