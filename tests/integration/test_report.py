"""A continuity report of a running daemon (a subprocess on real files): `bcd report` reads its journal while it
runs and writes, `GET /reports` serves the same figures, bad input is a 400 problem, and the daemon's stop is
journaled so the time after it is unobserved."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.runbooks.daemon_kit import OPERATOR_TOKEN, VIEWER_TOKEN, Bcd, Estate, open_estate, sha256

TODAY = dt.datetime.now(dt.UTC).date()
PERIOD = ("--from", str(TODAY - dt.timedelta(days=1)), "--to", str(TODAY))


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with open_estate(tmp_path) as estate:
        yield estate


async def report(config: Path, *args: str) -> tuple[int, Any, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bcd", "report", "-c", str(config), *PERIOD,
                                                *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, json.loads(out) if out else None, err.decode()


async def failed_over_and_back_up(estate: Estate, daemon: Bcd) -> dict[str, Any]:
    """dorset fails, payroll fails over to hampshire (automatically), dorset comes back: the finished run."""
    estate.dorset.status = 503
    run = await daemon.wait_first_run()
    run = await daemon.wait_run(run["id"])
    assert run["result"] == "succeeded", run
    estate.dorset.status = 200
    await daemon.wait_service(lambda s: s["active"] == "hampshire" and s["sites"]["dorset"]["state"] == "up")
    return run


async def test_a_report_of_a_running_daemon_and_after_its_stop(estate: Estate) -> None:
    daemon = await estate.start(estate.config())
    run = await failed_over_and_back_up(estate, daemon)
    code, made, err = await report(estate.config_path, "--format", "json")  # while the daemon runs
    assert code == 0, err
    (payroll,) = made["services"]
    (incident,) = payroll["incidents"]
    assert incident["site"] == "dorset" and incident["worst"] == "down" and incident["end"] is not None
    assert incident["recovery"]["run_id"] == run["id"]
    assert [r["run_id"] for r in payroll["recoveries"]] == [run["id"]]
    seconds = payroll["availability"]["seconds"]
    assert seconds["down"] > 0 and seconds["up"] > 0 and 0 < payroll["availability"]["ratio"] < 1
    assert seconds["unobserved"] > 3600  # yesterday and today before the daemon started
    assert made["chain"]["seq"] > 0
    assert {r["kind"] for r in made["risks"]} >= {"never_drilled", "no_objective"}
    # the journal was read, not locked: the daemon goes on writing (dorset fails again: journaled)
    estate.dorset.status = 503
    await daemon.wait_service(lambda s: s["sites"]["dorset"]["state"] == "down")
    assert await daemon.stop() == 0
    code, after, err = await report(estate.config_path, "--format", "json")
    assert code == 0, err
    unobserved = after["services"][0]["availability"]["seconds"]["unobserved"]
    assert unobserved > seconds["unobserved"]  # the time since the stop is not counted as observed


async def test_get_reports_serves_the_report_and_refuses_bad_input(estate: Estate) -> None:
    daemon = await estate.start(estate.config())
    await failed_over_and_back_up(estate, daemon)
    query = f"from={PERIOD[1]}&to={PERIOD[3]}"
    html = await daemon.call("GET", f"/reports?{query}", token=VIEWER_TOKEN)
    assert html.status == 200 and html.content_type == "text/html"
    assert '<section id="summary"><h2>Summary</h2>' in html.body and "payroll" in html.body
    made = await daemon.call("GET", f"/reports?{query}&format=json", token=VIEWER_TOKEN)
    assert made.status == 200 and len(made.body["services"][0]["incidents"]) == 1
    md = await daemon.call("GET", f"/reports?{query}&format=md&service=payroll", token=VIEWER_TOKEN)
    assert md.status == 200 and md.content_type == "text/markdown" and md.body.startswith("# Continuity report")
    for bad, detail in ((f"from={PERIOD[3]}&to={PERIOD[1]}", "the period must end after it starts"),
                        ("from=yesterday&to=2026-07-01", "expected a date such as 2026-07-01"),
                        (f"{query}&service=nope", "no service named 'nope'"),
                        (f"{query}&format=docx", "format must be one of html, json, md, pdf"),
                        (f"to={PERIOD[3]}", "missing from")):
        refused = await daemon.call("GET", f"/reports?{bad}", token=VIEWER_TOKEN)
        assert refused.status == 400 and refused.content_type == "application/problem+json", refused
        assert refused.body["detail"].startswith(detail), refused.body
    assert (await daemon.service())["status"] == "ok"  # the daemon goes on


async def fetch(daemon: Bcd, path: str, token: str | None) -> tuple[int, str, bytes]:
    """GET `path` as bytes (a PDF is no text): status, media type, body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session, \
            session.get(daemon.url + path, headers=headers) as response:
        return response.status, response.content_type, await response.read()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make deps)")
async def test_get_reports_as_pdf_prints_through_chromium_and_cleans_up(estate: Estate) -> None:
    tmp = estate.tmp_path / "tmp"
    tmp.mkdir()
    auth = {"anonymous_read": False, "tokens": [{"name": "victor", "role": "viewer", "sha256": sha256(VIEWER_TOKEN)},
                                                {"name": "olive", "role": "operator",
                                                 "sha256": sha256(OPERATOR_TOKEN)}]}
    daemon = await estate.start(estate.config(auth=auth), env={"TMPDIR": str(tmp)})
    path = f"/reports?from={PERIOD[1]}&to={PERIOD[3]}&format=pdf&service=payroll"
    status, _, _ = await fetch(daemon, path, None)
    assert status == 401  # the same auth as the other formats
    status, media, body = await fetch(daemon, path, VIEWER_TOKEN)
    assert status == 200, body[:500]
    assert media == "application/pdf" and body.startswith(b"%PDF-")
    assert list(tmp.iterdir()) == []  # the page, the PDF and Chromium's profile are removed
    assert (await daemon.service())["status"] == "ok"


async def test_get_reports_as_pdf_without_chromium_is_a_501_saying_why(estate: Estate) -> None:
    bare = estate.tmp_path / "bin"  # a PATH with no Chromium on it (the daemon runs from sys.executable)
    bare.mkdir()
    daemon = await estate.start(estate.config(), env={"PATH": str(bare)})
    refused = await daemon.call("GET", f"/reports?from={PERIOD[1]}&to={PERIOD[3]}&format=pdf", token=VIEWER_TOKEN)
    assert refused.status == 501 and refused.content_type == "application/problem+json", refused
    assert refused.body["detail"] == ("format=pdf needs headless Chromium, which is not installed (Debian: apt-get "
                                      "install chromium); format=html gives the same report, printable from any "
                                      "browser")
    html = await daemon.call("GET", f"/reports?from={PERIOD[1]}&to={PERIOD[3]}", token=VIEWER_TOKEN)
    assert html.status == 200 and html.content_type == "text/html"
