"""A report as PDF: its HTML printed by headless Chromium (Debian's `chromium`), where it is installed.

`bcd report --format pdf` and `GET /reports?format=pdf` both print through `html_to_pdf`: Chromium runs as a
child of its own session (bcd.process.run_child: argv, no shell), killed as a whole group at the deadline or
when the caller gives up, and its temporary directory (the page, the PDF, its profile) is removed after."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from bcd.process import BASE_ENV, run_child
from bcd.report import ReportError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")  # found on PATH
TIMEOUT = 300.0  # a year of 200 services (a 23 MB PDF) took 85 s on a loaded 2-core machine
OUTPUT_LIMIT = 16384  # of Chromium's own messages, kept for the reason of a failure
PAGE = "report.html"


class PdfError(ReportError):
    """Chromium is missing, failed or did not finish in time: `str()` says which, in one line."""


def chromium() -> str | None:
    """The path of a Chromium to print with, or None."""
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def not_installed(asked: str, instead: str) -> str:
    """Why `asked` (the PDF format, as the caller names it) cannot be had here, and what to ask `instead`."""
    return (f"{asked} needs headless Chromium, which is not installed (Debian: apt-get install chromium); "
            f"{instead} gives the same report, printable from any browser")


async def html_to_pdf(html: str, deadline: float = TIMEOUT) -> bytes:
    """The PDF Chromium prints of `html` (no network: the document is self-contained). PdfError when Chromium
    is not installed, fails, or has not finished within `deadline` seconds (its own: the printer never runs
    without one). The files are written, read and removed in a worker thread: Chromium's profile alone is
    hundreds of files (half a second to remove on a loaded machine), too long to hold up the daemon's loop."""
    browser = chromium()
    if browser is None:
        raise PdfError(not_installed("a PDF", "html"))
    tmp = Path(await asyncio.to_thread(_page, html))
    try:
        page, out = tmp / PAGE, tmp / "report.pdf"
        argv = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                f"--user-data-dir={tmp}/profile", "--no-pdf-header-footer", f"--print-to-pdf={out}", page.as_uri()]
        try:
            async with asyncio.timeout(deadline):
                done = await run_child(argv, {**BASE_ENV, "HOME": str(tmp)}, limit=OUTPUT_LIMIT, merge_stderr=True)
        except TimeoutError:
            raise PdfError(f"Chromium had not printed the report after {deadline:g} s (stopped)") from None
        except OSError as exc:
            raise PdfError(f"Chromium could not print the report: {exc}") from exc
        pdf = await asyncio.to_thread(_read, out)
        if done.code != 0 or pdf is None:
            tail = done.output.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise PdfError(f"Chromium could not print the report (exit {done.code}): {tail[0]}")
        return pdf
    finally:  # awaited even when the caller gives up (a shutdown's cancel): the files never stay behind
        await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)


def _page(html: str) -> str:
    """A new temporary directory holding `html` as the page to print."""
    tmp = tempfile.mkdtemp(prefix="bcd-report-")
    (Path(tmp) / PAGE).write_text(html, encoding="utf-8")
    return tmp


def _read(path: Path) -> bytes | None:
    """The PDF Chromium wrote, or None when it wrote none (or it cannot be read)."""
    try:
        return path.read_bytes()
    except OSError:
        return None
