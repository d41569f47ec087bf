"""`bcd_site_data_lag_seconds` from a live engine: the lag of each site that names a `data_lag`, in seconds, while
measured within two probe intervals; no series for a lag unknown, nor for a site that measures none."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.samples import Sample

from bcd.bus import Bus
from bcd.config import parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.outputs.metrics import Metrics
from bcd.outputs.metrics.data_lag import DataLagCollector
from bcd.view import EngineView
from tests.helpers.daemon import metric_value

CONFIG = """
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s, rise: 1, fall: 1, objectives: {{rpo: 5s}}}}
services:
  payroll:
    active: dorset
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire:
        probes: [{{name: replica, command: {{argv: [/bin/true]}}}}]
        data_lag: {{probe: replica, value: lag}}
"""
SERIES = 'bcd_site_data_lag_seconds{service="payroll",site="hampshire"}'


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(collector: DataLagCollector) -> list[Sample]:
    return next(iter(collector.collect())).samples


def test_the_lag_is_shown_while_fresh_and_vanishes_once_unknown(tmp_path: Path) -> None:
    clock = Clock()
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus(), clock)
    collector = DataLagCollector(EngineView(engine), clock)
    assert samples(collector) == []  # never measured
    engine.observe(Observation(ProbeKey("payroll", "hampshire", "replica"), Result.OK, 0.01, "OK - replaying",
                               clock.now, perfdata=(("lag", "1500ms;5;10"),)))
    assert [(s.labels, s.value) for s in samples(collector)] == [
        ({"service": "payroll", "site": "hampshire"}, 1.5)]
    clock.now += 20.0  # two intervals: still counts
    assert samples(collector)[0].value == 1.5
    clock.now += 0.1
    assert samples(collector) == []
    engine.close()


def test_the_daemon_exposes_the_family_promtool_clean(tmp_path: Path) -> None:
    engine = Engine(parse(CONFIG.format(state=tmp_path)), Journal(tmp_path / "bcd.sqlite"), Bus())
    metrics = Metrics(EngineView(engine))
    engine.observe(Observation(ProbeKey("payroll", "hampshire", "replica"), Result.OK, 0.01, "OK - replaying",
                               engine.clock(), perfdata=(("lag", "2s"),)))
    text = metrics.render().decode()
    assert "# TYPE bcd_site_data_lag_seconds gauge" in text
    assert metric_value(text, SERIES) == 2.0
    assert 'bcd_site_data_lag_seconds{service="payroll",site="dorset"}' not in text
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian prometheus) not installed")
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    engine.close()
