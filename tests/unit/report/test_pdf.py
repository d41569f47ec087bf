"""The PDF printer's deadline and failures (bcd.report.pdf). A Chromium that hangs or fails on demand cannot be
had from the real one: a stand-in shell script named `chromium`, first on PATH, plays it (a fake, named as such);
tests/unit/report/test_cli.py and tests/integration/test_report.py print real PDFs through the real Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import pytest

from bcd.process import process_group
from bcd.report.pdf import PdfError, html_to_pdf
from tests.helpers.runner_kit import eventually


def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> Path:
    """A fake `chromium` running `script` (sh), first on PATH; temporary files go to the returned directory."""
    bin_dir, tmp = tmp_path / "bin", tmp_path / "tmp"
    bin_dir.mkdir()
    tmp.mkdir()
    fake = bin_dir / "chromium"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


async def test_a_chromium_past_the_deadline_is_killed_with_its_children_and_its_files_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    tmp = stand_in(tmp_path, monkeypatch, f"sleep 60 & echo $$ $! > {pids}; wait")
    with pytest.raises(PdfError) as raised:
        await html_to_pdf("<p>report</p>", deadline=1.0)
    assert str(raised.value) == "Chromium had not printed the report after 1 s (stopped)"
    pid_list = [int(pid) for pid in pids.read_text().split()]
    # the group was killed with the deadline; the sleep grandchild dies as soon as the kernel delivers that
    await eventually(lambda: all(process_group(pid) is None for pid in pid_list), 5, "the stand-in's group gone")
    assert list(tmp.iterdir()) == []


async def test_a_caller_that_gives_up_leaves_no_chromium_and_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pids = tmp_path / "pids"
    tmp = stand_in(tmp_path, monkeypatch, f"sleep 60 & echo $$ $! > {pids}.new; mv {pids}.new {pids}; wait")
    printing = asyncio.create_task(html_to_pdf("<p>report</p>"))
    await eventually(pids.exists, 10, "the stand-in started")
    printing.cancel()  # as the daemon's shutdown cancels a request's task
    with contextlib.suppress(asyncio.CancelledError):
        await printing
    assert printing.cancelled()
    pid_list = [int(pid) for pid in pids.read_text().split()]
    await eventually(lambda: all(process_group(pid) is None for pid in pid_list), 5, "the stand-in's group gone")
    assert list(tmp.iterdir()) == []


async def test_a_failing_chromium_is_a_one_line_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = stand_in(tmp_path, monkeypatch, "echo starting; echo 'Missing X server or $DISPLAY' >&2; exit 1")
    with pytest.raises(PdfError) as raised:
        await html_to_pdf("<p>report</p>")
    assert str(raised.value) == "Chromium could not print the report (exit 1): Missing X server or $DISPLAY"
    assert list(tmp.iterdir()) == []


async def test_no_chromium_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PdfError, match=r"^a PDF needs headless Chromium, which is not installed"):
        await html_to_pdf("<p>report</p>")
