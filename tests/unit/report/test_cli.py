"""`bcd report` as an operator runs it (a subprocess on real files): the formats, a file written, and bad input
refused with exit 2 and one clear line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.report.test_compute import estate  # noqa: F401 - the fixture

EXIT_OK, EXIT_USAGE = 0, 2
PERIOD = ("--from", "2026-07-01", "--to", "2026-07-10")


def bcd(*args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "bcd", "report", *args], capture_output=True, timeout=120,
                          env={"PATH": path, "HOME": os.environ.get("HOME", "/root")}, check=False)


def test_json_markdown_and_html_of_the_same_period(estate: Path, tmp_path: Path) -> None:  # noqa: F811
    done = bcd("-c", str(estate), *PERIOD, "--format", "json")
    assert done.returncode == EXIT_OK, done.stderr
    report = json.loads(done.stdout)
    payroll = next(s for s in report["services"] if s["name"] == "payroll")
    assert round(payroll["availability"]["ratio"] * 100, 2) == 99.93
    assert payroll["availability"]["seconds"]["unobserved"] == 21_600
    assert report["period"]["to"] - report["period"]["from"] == 10 * 86400  # --to's day is included
    md = bcd("-c", str(estate), *PERIOD, "--format", "md", "--service", "payroll")
    assert md.returncode == EXIT_OK and b"| payroll | 99.928 % | 1 | 2 (1) | never drilled | 4 |" in md.stdout
    out = tmp_path / "q3.html"
    html = bcd("-c", str(estate), *PERIOD, "-o", str(out))
    assert html.returncode == EXIT_OK and html.stderr.decode().startswith(f"wrote {out} (2 services, 4 risks)")
    assert out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(("args", "message"), [
    (("--from", "2026-09-30", "--to", "2026-07-01"), "the period must end after it starts: from 2026-09-30 to "
                                                     "2026-07-01"),
    (("--from", "July", "--to", "2026-07-01"), "expected a date such as 2026-07-01"),
    ((*PERIOD, "--service", "nope"), "no service named 'nope' in the config (it has library, payroll)"),
])
def test_bad_input_exits_2_with_a_clear_message(estate: Path, args: tuple[str, ...], message: str) -> None:  # noqa: F811
    done = bcd("-c", str(estate), *args)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.decode().startswith(f"bcd report: {message}")
    assert b"Traceback" not in done.stderr and done.stdout == b""


def test_a_missing_state_dir_exits_2_naming_it(estate: Path, tmp_path: Path) -> None:  # noqa: F811
    shutil.rmtree(tmp_path / "state")
    done = bcd("-c", str(estate), *PERIOD)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.decode() == (f"bcd report: state_dir {tmp_path / 'state'} does not exist: no journal to "
                                    "report on (has the daemon run with this config?)\n")


def test_pdf_without_chromium_says_so(estate: Path) -> None:  # noqa: F811
    done = bcd("-c", str(estate), *PERIOD, "--format", "pdf", path="/nonexistent")
    assert done.returncode == EXIT_USAGE
    assert b"--format pdf needs headless Chromium, which is not installed" in done.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make deps)")
def test_pdf_through_chromium(estate: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "q3.pdf"
    done = bcd("-c", str(estate), *PERIOD, "--format", "pdf", "-o", str(out))
    assert done.returncode == EXIT_OK, done.stderr
    assert out.read_bytes().startswith(b"%PDF-")
