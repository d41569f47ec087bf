"""`bcd_service_monitored_since_timestamp_seconds` and `bcd_plan_monitored_since_timestamp_seconds` from a live
engine over a real journal: when bcd first monitored each service (plan), what BcdDrillOverdue (BcdPlanDrillOverdue)
counts one never drilled successfully from. Dated from the first config load that names it (a new install is not
overdue at once), unchanged by a restart, later for one added later, and from the journal's oldest record for a
journal older than the table (an upgrade)."""

from __future__ import annotations

import shutil
import sqlite3
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
SINCE = 'bcd_service_monitored_since_timestamp_seconds{{service="{}"}}'
PLAN_SINCE = 'bcd_plan_monitored_since_timestamp_seconds{{plan="{}"}}'


def config_text(state: Path, services: tuple[str, ...], plans: tuple[str, ...] = ()) -> str:
    body = "".join(f"\n  {name}: {{active: dorset, sites: {SITES}}}" for name in services)
    plan_body = "".join(f"\n  {name}: {{from: dorset, to: hampshire}}" for name in plans)
    return (f"state_dir: {state}\nsites: {{dorset: {{}}, hampshire: {{}}}}\nservices:{body}\n"
            + (f"plans:{plan_body}\n" if plans else ""))


def scrape(tmp_path: Path, now: float, services: tuple[str, ...] = ("payroll", "archive"),
           plans: tuple[str, ...] = ()) -> str:
    """/metrics of a daemon started at `now` on the journal in tmp_path (a fresh engine: as after a restart)."""
    engine = Engine(parse(config_text(tmp_path, services, plans)), Journal(tmp_path / "bcd.sqlite"), Bus(),
                    lambda: now)
    try:
        return Metrics(EngineView(engine)).render().decode()
    finally:
        engine.close()


def since(text: str, service: str) -> float | None:
    return metric_value(text, SINCE.format(service))


def test_a_new_install_dates_every_service_from_its_first_load_and_a_restart_keeps_it(tmp_path: Path) -> None:
    first = scrape(tmp_path, 9000.0)
    assert "# TYPE bcd_service_monitored_since_timestamp_seconds gauge" in first
    assert (since(first, "payroll"), since(first, "archive")) == (9000.0, 9000.0)
    assert metric_value(first, 'bcd_drill_last_success_timestamp_seconds{service="payroll"}') is None  # not drilled
    again = scrape(tmp_path, 50_000.0)  # restarted much later: still when bcd first monitored them
    assert (since(again, "payroll"), since(again, "archive")) == (9000.0, 9000.0)


def test_a_service_added_later_is_dated_from_the_load_that_added_it(tmp_path: Path) -> None:
    scrape(tmp_path, 9000.0, ("payroll",))
    text = scrape(tmp_path, 20_000.0, ("payroll", "library"))
    assert (since(text, "payroll"), since(text, "library")) == (9000.0, 20_000.0)
    assert since(text, "archive") is None  # only configured services


def test_a_reload_adding_a_service_dates_it_from_the_reload(tmp_path: Path) -> None:
    clock = [9000.0]
    engine = Engine(parse(config_text(tmp_path, ("payroll",))), Journal(tmp_path / "bcd.sqlite"), Bus(),
                    lambda: clock[0])
    try:
        metrics = Metrics(EngineView(engine))
        assert since(metrics.render().decode(), "payroll") == 9000.0
        clock[0] = 12_000.0
        engine.apply_config(parse(config_text(tmp_path, ("payroll", "library"))))
        text = metrics.render().decode()
        assert (since(text, "payroll"), since(text, "library")) == (9000.0, 12_000.0)
    finally:
        engine.close()


def test_a_journal_older_than_the_table_dates_its_services_from_its_oldest_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "bcd.sqlite")
    journal.append(Event(EventKind.SITE_TRANSITION, 1000.0, "payroll", "dorset", "unknown to up",
                         SiteTransition("unknown", "up")))
    journal.close()
    text = scrape(tmp_path, 9000.0)
    assert (since(text, "payroll"), since(text, "archive")) == (1000.0, 1000.0)
    with sqlite3.connect(tmp_path / "bcd.sqlite") as db:
        assert dict(db.execute("SELECT name, since FROM monitored WHERE kind = 'service'")) == {
            "payroll": 1000.0, "archive": 1000.0}


def test_plans_are_dated_as_services_are_each_apart(tmp_path: Path) -> None:
    first = scrape(tmp_path, 9000.0, ("payroll",), ("evacuate",))
    assert "# TYPE bcd_plan_monitored_since_timestamp_seconds gauge" in first
    assert metric_value(first, PLAN_SINCE.format("evacuate")) == 9000.0
    text = scrape(tmp_path, 20_000.0, ("payroll", "archive"), ("evacuate", "payroll"))  # a plan named as a service
    assert (metric_value(text, PLAN_SINCE.format("evacuate")), metric_value(text, PLAN_SINCE.format("payroll"))) == (
        9000.0, 20_000.0)
    assert (since(text, "payroll"), since(text, "archive")) == (9000.0, 20_000.0)


def test_the_exposition_passes_promtool(tmp_path: Path) -> None:
    text = scrape(tmp_path, 9000.0, plans=("evacuate",))
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian prometheus) not installed")
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
