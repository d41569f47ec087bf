"""Daemon.reload: a failure nobody foresaw is still a reported failure, and the load runs in a thread that
never holds up the exit."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import weakref
from pathlib import Path
from typing import Any, NoReturn

import pytest
from structlog.testing import capture_logs

from bcd import config as config_module
from bcd.app import Daemon
from bcd.daemon_thread import in_daemon_thread


async def test_an_unexpected_exception_in_a_reload_is_a_reported_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bcd.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nsites: {{dorset: {{}}}}\n")
    daemon = Daemon(str(path), config_module.load(path))

    def a_bug(*args: Any) -> NoReturn:  # a fake: no input makes the real loader fail this way any more
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(config_module, "load", a_bug)
    try:
        with capture_logs() as logs:
            assert await daemon.reload() is False
        assert daemon.metrics.reload.successful is False
        failed = [line for line in logs if line["event"] == "config_reload_failed"]
        assert len(failed) == 1
        assert failed[0]["reason"] == "RuntimeError: something nobody foresaw"
        assert failed[0]["log_level"] == "error"
    finally:
        daemon.engine.close()
        daemon.journal.close()


async def test_the_load_runs_in_a_daemon_thread_and_its_outcome_comes_back() -> None:
    thread = await in_daemon_thread(threading.current_thread)
    assert thread is not threading.main_thread()
    assert thread.daemon  # not joined at exit: SIGTERM does not wait for a reload
    with pytest.raises(ZeroDivisionError):
        await in_daemon_thread(divmod, 1, 0)


class Work:
    """Stands for what a failed load held (its text, data and node tree)."""


async def test_a_failure_in_the_thread_leaves_no_cycle_that_keeps_its_work_alive() -> None:
    held: list[weakref.ref[Work]] = []

    def fail() -> NoReturn:
        work = Work()
        held.append(weakref.ref(work))
        raise ValueError(f"failed with {work}")  # its traceback holds this frame, and `work`

    gc.disable()  # freed by reference counting alone, as the daemon (which collects rarely) needs
    try:
        with contextlib.suppress(ValueError):
            await in_daemon_thread(fail)
        for thread in threading.enumerate():
            if thread.name == "bcd-reload":
                thread.join()  # it may still be between handing over its outcome and ending
        await asyncio.sleep(0)  # the callback that delivered the outcome is done with it
        assert held[0]() is None
    finally:
        gc.enable()
