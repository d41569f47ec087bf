"""The command probe running real monitoring-plugins and scripts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe

PLUGINS = Path("/usr/lib/nagios/plugins")
HANG = Path(__file__).parents[2] / "data" / "scripts" / "hang_with_child.sh"

pytestmark = pytest.mark.skipif(
    not (PLUGINS / "check_dummy").exists(), reason="monitoring-plugins-basic is not installed (make deps)"
)


async def probe(ctx: ProbeContext, *argv: str, timeout: float = 5.0, **spec: Any) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "command": {"argv": list(argv), **spec}})
    return await build_probe(config, timeout, ctx).run()


@pytest.mark.parametrize(
    ("argv", "result", "reason"),
    [
        ([str(PLUGINS / "check_dummy"), "0", "all good"], Result.OK, "OK: all good"),
        ([str(PLUGINS / "check_dummy"), "1", "disk 85%"], Result.WARN, "WARNING: disk 85%"),
        ([str(PLUGINS / "check_dummy"), "2", "disk 99%"], Result.FAIL, "CRITICAL: disk 99%"),
        ([str(PLUGINS / "check_dummy"), "3", "no idea"], Result.FAIL, "unknown: UNKNOWN: no idea"),
        ([str(PLUGINS / "check_dummy"), "7"], Result.FAIL, "unknown: UNKNOWN: Status 7 is not a supported error state"),
        (["/bin/sh", "-c", "echo 'odd | x=1'; exit 42"], Result.FAIL, "unknown: exit status 42: odd"),
        (["/bin/sh", "-c", "kill -TERM $$"], Result.FAIL, "unknown: killed by SIGTERM: (no output)"),
        (["/nonexistent/check_x"], Result.FAIL, "unknown: cannot run /nonexistent/check_x: No such file or directory"),
    ],
)
async def test_exit_status_decides(ctx: ProbeContext, argv: list[str], result: Result, reason: str) -> None:
    got = await probe(ctx, *argv)
    assert (got.result, got.reason) == (result, reason)


async def test_perfdata_of_a_real_plugin(ctx: ProbeContext) -> None:
    result = await probe(ctx, str(PLUGINS / "check_load"), "-w", "1000,1000,1000", "-c", "2000,2000,2000")
    assert result.result is Result.OK
    assert result.reason.startswith("LOAD OK - total load average: ")
    assert [label for label, _ in result.perfdata] == ["load1", "load5", "load15"]
    assert all(value.endswith(";1000.000;2000.000;0;") for _, value in result.perfdata)


async def test_environment_is_minimal_plus_env(ctx: ProbeContext) -> None:
    script = 'echo "FOO=$FOO HOME=${HOME-unset} PATH=$PATH"'
    result = await probe(ctx, "/bin/sh", "-c", script, env={"FOO": "bar baz"})
    assert result.reason == "FOO=bar baz HOME=unset PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


async def test_control_bytes_of_plugin_output_are_escaped(ctx: ProbeContext) -> None:
    script = r"printf '\033[31mCRITICAL\033[0m: disk\007 full\tnow\nsecond line\n'; exit 2"
    result = await probe(ctx, "/bin/sh", "-c", script)
    assert (result.result, result.reason) == (Result.FAIL, r"\x1b[31mCRITICAL\x1b[0m: disk\x07 full now")


async def test_huge_output_is_bounded_and_drained(ctx: ProbeContext) -> None:
    script = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo '|big=1'"
    result = await probe(ctx, "/bin/sh", "-c", script)
    assert result.result is Result.OK
    assert len(result.reason) == 200
    assert result.perfdata == ()  # the perfdata line came after the first 64 KiB


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # a zombie has no process group left to do harm


async def _all_gone(pids: list[int], within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while not all(_gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)  # polling a condition with a deadline: the kernel reaps asynchronously
    return True


async def test_timeout_kills_the_whole_process_group(ctx: ProbeContext, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    started = time.monotonic()
    result = await probe(ctx, str(HANG), str(pids_file), timeout=1.0)
    assert time.monotonic() - started < 1.0 + 0.5
    assert result.result is Result.FAIL
    assert result.reason == f"timeout after 1s running {HANG}"
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert len(pids) == 2
    assert await _all_gone(pids), f"still running: {[pid for pid in pids if not _gone(pid)]}"
