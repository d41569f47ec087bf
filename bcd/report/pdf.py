"""A report as PDF: its HTML printed by headless Chromium (Debian's `chromium`), where it is installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from bcd.report import ReportError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")  # found on PATH
TIMEOUT = 120.0


def chromium() -> str | None:
    """The path of a Chromium to print with, or None."""
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def html_to_pdf(html: str) -> bytes:
    """The PDF Chromium prints of `html` (argv, no shell; no network: the document is self-contained).
    ReportError when Chromium is not installed or fails."""
    browser = chromium()
    if browser is None:
        raise ReportError("--format pdf needs headless Chromium, which is not installed (Debian: apt-get install "
                          "chromium); --format html gives the same report, printable from any browser")
    with tempfile.TemporaryDirectory(prefix="bcd-report-") as tmp:
        page, out = Path(tmp) / "report.html", Path(tmp) / "report.pdf"
        page.write_text(html, encoding="utf-8")
        argv = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer", f"--print-to-pdf={out}", page.as_uri()]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReportError(f"Chromium could not print the report: {exc}") from exc
        if done.returncode != 0 or not out.is_file():
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ReportError(f"Chromium could not print the report (exit {done.returncode}): {tail[0]}")
        return out.read_bytes()
