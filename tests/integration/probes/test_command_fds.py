"""Children get only stdin, stdout and stderr, under uvloop (the loop of `bcd run`) as under asyncio's loop,
and a command is done when it exits, even if a helper it started still holds its output pipe."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from pydantic import TypeAdapter

from bcd.config import ProbeConfig
from bcd.model import ProbeResult, Result
from bcd.probes.base import ProbeContext
from bcd.probes.registry import build_probe
from bcd.process import BASE_ENV, run_child

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop,
}


def run_on(loop: str, work: Coroutine[Any, Any, Any]) -> Any:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(work)


async def probe(*argv: str, timeout: float) -> ProbeResult:
    config = TypeAdapter(ProbeConfig).validate_python({"name": "t", "command": {"argv": list(argv)}})
    return await build_probe(config, timeout, ProbeContext()).run()


@pytest.fixture
def helpers(tmp_path: Path) -> Iterator[Path]:
    """A file the plugin writes its helper's pid to; the helper is killed at the end."""
    pid_file = tmp_path / "helper.pid"
    yield pid_file
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("redirect", ["</dev/null >/dev/null 2>&1", ""], ids=["redirected", "holding-stdout"])
def test_a_plugin_that_backgrounds_a_helper_is_ok_when_it_exits(loop: str, redirect: str, helpers: Path) -> None:
    plugin = f'/bin/sleep 30 {redirect} & echo "$!" > {helpers}; echo "OK: helper started"; exit 0'
    started = time.monotonic()
    result = run_on(loop, probe("/bin/sh", "-c", plugin, timeout=2.0))
    assert (result.result, result.reason) == (Result.OK, "OK: helper started")
    assert time.monotonic() - started < 1.0  # not the 2 s timeout
    assert Path(f"/proc/{helpers.read_text().strip()}").exists()  # the helper runs on; bcd did not wait for it


@pytest.mark.parametrize("loop", LOOPS)
def test_a_probe_child_has_only_stdin_stdout_stderr(loop: str) -> None:
    result = run_on(loop, probe("/bin/ls", "-m", "/proc/self/fd", timeout=2.0))
    assert result.reason == "0, 1, 2, 3"  # 3: the directory ls opened to list


@pytest.mark.parametrize("loop", LOOPS)
def test_a_step_child_has_only_stdin_stdout_stderr(loop: str) -> None:
    finished = run_on(loop, run_child(["/bin/ls", "-m", "/proc/self/fd"], BASE_ENV, limit=100, merge_stderr=True))
    assert (finished.code, finished.output) == (0, b"0, 1, 2, 3\n")
