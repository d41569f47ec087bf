"""`bcd_service_first_seen_timestamp_seconds` from a live engine over a real journal: when bcd first monitored
each service (its oldest event), what BcdDrillOverdue counts a service never drilled from; the same after a
restart; no series for a service with no event yet (a new install is not overdue at once)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.events import Event, EventKind, SiteTransition
from bcd.journal import Journal
from bcd.outputs.metrics import Metrics
from bcd.view import EngineView
from tests.helpers.daemon import metric_value

SITES = ('{dorset: {probes: [{name: health, http: {url: "http://127.0.0.1:1/"}}]}, '
         'hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/"}}]}}')


def config_text(state: Path) -> str:
    """payroll and archive, each on dorset and hampshire."""
    services = "".join(f"\n  {name}: {{active: dorset, sites: {SITES}}}" for name in ("payroll", "archive"))
    return f"state_dir: {state}\nsites: {{dorset: {{}}, hampshire: {{}}}}\nservices:{services}\n"


FIRST = 'bcd_service_first_seen_timestamp_seconds{{service="{}"}}'


def transition(journal: Journal, at: float, service: str) -> None:
    journal.append(Event(EventKind.SITE_TRANSITION, at, service, "dorset", "unknown to up",
                         SiteTransition("unknown", "up")))


def scrape(tmp_path: Path) -> str:
    """/metrics of a daemon started on the journal in tmp_path (a fresh engine: as after a restart)."""
    engine = Engine(parse(config_text(tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), lambda: 9000.0)
    try:
        return Metrics(EngineView(engine)).render().decode()
    finally:
        engine.close()


def test_a_service_counts_from_its_oldest_event_also_after_a_restart(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    transition(journal, 1000.0, "payroll")
    transition(journal, 2000.0, "payroll")
    journal.close()
    text = scrape(tmp_path)
    assert "# TYPE bcd_service_first_seen_timestamp_seconds gauge" in text
    assert metric_value(text, FIRST.format("payroll")) == 1000.0
    assert metric_value(text, FIRST.format("archive")) is None  # no event yet: not overdue on a new install
    assert metric_value(text, 'bcd_drill_last_success_timestamp_seconds{service="payroll"}') is None  # never drilled
    journal = Journal(tmp_path / "bcd.sqlite")
    transition(journal, 5000.0, "archive")
    journal.close()
    again = scrape(tmp_path)  # restarted: the same start, not the daemon's
    assert (metric_value(again, FIRST.format("payroll")), metric_value(again, FIRST.format("archive"))) == (
        1000.0, 5000.0)
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian prometheus) not installed")
    check = subprocess.run(["promtool", "check", "metrics"], input=again.encode(), capture_output=True, check=False)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
