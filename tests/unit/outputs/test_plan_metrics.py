"""`bcd_plan_service_info{plan,service}`: one series per service a plan covers (what the service dashboard joins
on to show a service's plan drills), rendered from the config once and kept until a reload."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import Config, parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.outputs.metrics import Metrics
from bcd.view import EngineView
from tests.helpers.runner_kit import acting

CONFIG = """
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}, wiltshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s}}
services:
  payroll:
    active: dorset
    labels: {{tier: gold}}
    sites:
      dorset: {{probes: [{{name: health, tcp: {{host: 127.0.0.1, port: 1}}}}]}}
      hampshire: {{probes: [{{name: health, tcp: {{host: 127.0.0.1, port: 2}}}}]}}
  library:
    active: dorset
    sites:
      dorset: {{probes: [{{name: opac, tcp: {{host: 127.0.0.1, port: 3}}}}]}}
      hampshire: {{probes: [{{name: opac, tcp: {{host: 127.0.0.1, port: 4}}}}]}}
  archive:
    active: dorset
    sites:
      dorset: {{probes: [{{name: web, tcp: {{host: 127.0.0.1, port: 5}}}}]}}
      wiltshire: {{probes: [{{name: web, tcp: {{host: 127.0.0.1, port: 6}}}}]}}
plans:
{plans}
"""

PLANS = """
  evacuate: {from: dorset, to: hampshire}
  gold: {from: dorset, to: hampshire, services: {labels: {tier: gold}}}
  books: {from: dorset, to: hampshire, services: [library]}
"""


def config(tmp_path: Path, plans: str = PLANS) -> Config:
    return parse(CONFIG.format(state=tmp_path, plans=plans))


@pytest.fixture
def live(tmp_path: Path) -> tuple[Engine, Metrics]:
    engine, _ = acting(config(tmp_path), Journal(tmp_path / "bcd.sqlite"), Bus())
    return engine, Metrics(EngineView(engine))


def members(text: str) -> list[tuple[str, str, str]]:
    return re.findall(r'^bcd_plan_service_info\{plan="([^"]*)",service="([^"]*)"\} (\S+)$', text, re.M)


def test_each_plan_names_the_services_it_covers(live: tuple[Engine, Metrics]) -> None:
    """`all`, a list and a label selector; archive, without hampshire, is in no plan (it can never move)."""
    _, metrics = live
    text = metrics.render().decode()
    assert "# TYPE bcd_plan_service_info gauge\n" in text
    assert members(text) == [("books", "library", "1"), ("evacuate", "library", "1"), ("evacuate", "payroll", "1"),
                             ("gold", "payroll", "1")]


def test_the_text_is_kept_until_a_reload_changes_the_plans(tmp_path: Path, live: tuple[Engine, Metrics]) -> None:
    engine, metrics = live
    first = list(metrics.plan_members.parts())  # rendered in pieces: the head, then a piece per plan here
    assert len(first) == 4
    (kept,) = metrics.plan_members.parts()
    assert kept == "".join(first)
    (again,) = metrics.plan_members.parts()
    assert again is kept  # kept as one string: a scrape costs no rendering
    engine.apply_config(config(tmp_path, "  west: {from: dorset, to: wiltshire}"))
    assert members(metrics.render().decode()) == [("west", "archive", "1")]


def test_an_estate_without_plans_has_the_family_and_no_series(tmp_path: Path) -> None:
    text = CONFIG.format(state=tmp_path, plans="").replace("plans:\n", "")
    engine, _ = acting(parse(text), Journal(tmp_path / "bcd.sqlite"), Bus())
    assert members(Metrics(EngineView(engine)).render().decode()) == []


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
def test_promtool_check_metrics_is_clean_with_plans(live: tuple[Engine, Metrics]) -> None:
    _, metrics = live
    check = subprocess.run(["promtool", "check", "metrics"], input=metrics.render(), capture_output=True, check=False)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
