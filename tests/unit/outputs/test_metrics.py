"""/metrics as rendered from a live engine: promtool-clean, complete, and forgetting removed services."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bcd.bus import Bus
from bcd.config import Config, parse
from bcd.engine import Engine
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.outputs.metrics import Metrics, ProbeMetrics, RunnerCollector, escape
from bcd.view import EngineView
from tests.helpers.runner_kit import acting

CONFIG = """
state_dir: {state}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 10s, timeout: 3s, rise: 1, fall: 1}}
runbooks:
  move: {{steps: [{{name: wait, sleep: {{duration: 1s}}}}]}}
services:
  payroll:
    active: dorset
    failover: {{runbook: move, mode: manual}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
{extra}
"""

LIBRARY = """
  library:
    active: hampshire
    sites:
      hampshire: {probes: [{name: opac, tcp: {host: 127.0.0.1, port: 3}}]}
"""


def config(tmp_path: Path, extra: str = "") -> Config:
    return parse(CONFIG.format(state=tmp_path, extra=extra))


def observe(engine: Engine, metrics: Metrics, service: str, site: str, probe: str, result: Result) -> None:
    obs = Observation(ProbeKey(service, site, probe), result, 0.02, f"{result} from test", 100.0)
    metrics.probes.record(obs)
    engine.observe(obs)


@pytest.fixture
def live(tmp_path: Path) -> tuple[Engine, Metrics]:
    engine, runner = acting(config(tmp_path, LIBRARY), Journal(tmp_path / "bcd.sqlite"), Bus())
    metrics = Metrics(EngineView(engine))
    metrics.register(RunnerCollector(runner.stats))
    observe(engine, metrics, "payroll", "dorset", "health", Result.FAIL)
    observe(engine, metrics, "payroll", "hampshire", "health", Result.OK)
    observe(engine, metrics, "library", "hampshire", "opac", Result.WARN)
    return engine, metrics


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_family_of_the_contract_is_rendered(live: tuple[Engine, Metrics]) -> None:
    _, metrics = live
    text = metrics.render().decode()
    for family in (
        "bcd_probe_success", "bcd_probe_duration_seconds", "bcd_probe_results_total", "bcd_site_health",
        "bcd_site_up", "bcd_health_transitions_total", "bcd_service_status", "bcd_service_active_site",
        "bcd_config_last_reload_successful", "bcd_config_last_reload_success_timestamp_seconds", "bcd_build_info",
        "bcd_runbook_runs_total", "bcd_runbook_running", "bcd_service_blocked", "bcd_service_monitored_since_timestamp_seconds",
    ):
        assert f"# TYPE {family} " in text, family
    assert sample(text, 'bcd_site_health{service="payroll",site="dorset",state="down"}') == 1
    assert sample(text, 'bcd_site_health{service="payroll",site="dorset",state="up"}') == 0
    assert sample(text, 'bcd_service_status{service="payroll",status="failover_pending"}') == 1
    assert sample(text, 'bcd_probe_results_total{service="library",site="hampshire",probe="opac",result="warn"}') == 1
    assert sample(text, 'bcd_probe_success{service="library",site="hampshire",probe="opac"}') == 1
    assert sample(text, 'bcd_probe_duration_seconds_bucket{service="payroll",site="dorset",probe="health",le="0.025"}') == 1
    assert sample(text, 'bcd_service_active_site{service="payroll",site="dorset"}') == 1
    assert sample(text, 'bcd_health_transitions_total{service="payroll",site="dorset",from="unknown",to="down"}') == 1


def test_run_outcomes_are_shown_at_zero_before_the_first_run(live: tuple[Engine, Metrics]) -> None:
    # so that the first failed run is an increase: a series that appears at 1 is invisible to increase()
    _, metrics = live
    text = metrics.render().decode()
    for trigger in ("auto", "operator"):
        for result in ("succeeded", "failed", "aborted", "rolled_back", "interrupted", "dry_run"):
            labels = f'result="{result}",runbook="move",service="payroll",trigger="{trigger}"'  # client's order
            assert sample(text, f"bcd_runbook_runs_total{{{labels}}}") == 0, labels
    assert 'bcd_runbook_runs_total{service="library"' not in text  # no runbook, no series


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) not installed")
def test_promtool_check_metrics_is_clean(live: tuple[Engine, Metrics]) -> None:
    _, metrics = live
    check = subprocess.run(["promtool", "check", "metrics"], input=metrics.render(), capture_output=True, check=False)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_removed_service_disappears_after_reload(tmp_path: Path, live: tuple[Engine, Metrics]) -> None:
    engine, metrics = live
    assert 'service="library"' in metrics.render().decode()
    engine.apply_config(config(tmp_path))
    metrics.probes.retain({ProbeKey("payroll", "dorset", "health"), ProbeKey("payroll", "hampshire", "health")})
    text = metrics.render().decode()
    assert 'service="library"' not in text
    assert 'service="payroll"' in text


def test_a_reload_in_the_middle_of_a_scrape_leaves_that_scrape_whole(
    tmp_path: Path, live: tuple[Engine, Metrics]
) -> None:
    """A scrape goes out in pieces with the event loop running between them: a reload that removes a
    service meanwhile must neither break the scrape nor leave it half old, half new."""
    engine, metrics = live
    metrics.labels.follow(EngineView(engine))  # as after an earlier scrape
    parts = metrics.parts()
    started = [next(parts), next(parts)]  # the estate's tables are taken when its first piece is made
    engine.apply_config(config(tmp_path))
    text = "".join(started + list(parts))
    check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    assert sample(text, 'bcd_site_health{service="library",site="hampshire",state="up"}') is not None
    assert 'service="library"' not in metrics.render().decode().split("# HELP bcd_probe_success")[0]


@pytest.mark.parametrize(("raw", "escaped"), [("a", "a"), ('say "hi"', 'say \\"hi\\"'), ("back\\slash", "back\\\\slash"),
                                               ("two\nlines", "two\\nlines")])
def test_label_values_are_escaped(raw: str, escaped: str) -> None:
    assert escape(raw) == escaped


def test_duration_buckets_are_cumulative_and_inclusive(live: tuple[Engine, Metrics]) -> None:
    """A latency equal to a bound counts in that bound's bucket (le = less or equal); beyond the largest
    bound only +Inf counts it; _sum and _count add up every run (the fixture's 0.02 s run included)."""
    _, metrics = live
    for latency, result in ((0.005, Result.OK), (0.3, Result.WARN), (20.0, Result.FAIL)):
        metrics.probes.record(Observation(ProbeKey("payroll", "dorset", "health"), result, latency, "x", 101.0))
    text = metrics.render().decode()
    series = 'bcd_probe_duration_seconds{}{{service="payroll",site="dorset",probe="health"{}}}'
    expected = {"0.001": None, "0.005": 1, "0.01": 1, "0.025": 2, "0.25": 2, "0.5": 3, "10.0": 3, "+Inf": 4}
    for bound, count in expected.items():
        assert sample(text, series.format("_bucket", f',le="{bound}"')) == count, bound
    assert sample(text, series.format("_count", "")) == 4
    assert sample(text, series.format("_sum", "")) == pytest.approx(20.325)
    results = 'bcd_probe_results_total{{service="payroll",site="dorset",probe="health",result="{}"}}'
    assert [sample(text, results.format(r)) for r in ("ok", "warn", "fail")] == [1, 1, 2]
    assert sample(text, 'bcd_probe_success{service="payroll",site="dorset",probe="health"}') == 0


def test_a_probe_keeps_few_count_objects_however_long_it_runs() -> None:
    """Counts above 256 are int objects of their own: equal cumulative counts must share one."""
    metrics = ProbeMetrics()
    key = ProbeKey("payroll", "dorset", "health")
    for run in range(1000):
        latency = 0.002 if run % 4 else 0.3  # two buckets get observations
        metrics.record(Observation(key, Result.OK, latency, "ok", float(run)))
    cumulative = metrics.stats[key].cumulative
    assert cumulative == [750] * 6 + [1000] * 6  # le=0.005 … 0.25, then le=0.5 … +Inf
    assert len({id(count) for count in cumulative}) == 2


def test_site_label_sets_are_kept_under_the_estates_own_keys(live: tuple[Engine, Metrics]) -> None:
    """One label set per site, kept between scrapes: under the estate's (service, site) tuples, not copies."""
    engine, metrics = live
    metrics.render()
    own = {id(key) for key in engine.sites}
    assert len(metrics.labels.sites) == len(engine.sites)
    assert all(id(key) in own for key in metrics.labels.sites)


def test_perfdata_is_a_gauge_per_label_in_base_units_until_a_run_reports_none(live: tuple[Engine, Metrics]) -> None:
    _, metrics = live
    key = ProbeKey("library", "hampshire", "opac")
    said = (("time", "12ms;100;200;0;"), ("used", "42%;80;90"), ("'free' disk", "2KB"), ("load", "U"))
    metrics.probes.record(Observation(key, Result.OK, 0.02, "OK", 101.0, perfdata=said))
    text = metrics.render().decode()
    series = 'bcd_probe_perfdata{service="library",site="hampshire",probe="opac",label="%s"}'
    assert sample(text, series % "time") == 0.012
    assert sample(text, series % "used") == 0.42
    assert sample(text, series % "'free' disk") == 2048
    assert "load" not in text.split("# HELP bcd_probe_perfdata")[1]  # U: unknown, no sample
    assert 'probe="health",label=' not in text  # HTTP probes report none
    if shutil.which("promtool") is not None:
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False)
        assert check.returncode == 0, (check.stdout + check.stderr).decode()
    metrics.probes.record(Observation(key, Result.FAIL, 3.0, "timeout after 3s", 102.0))  # no perfdata this time
    assert "bcd_probe_perfdata{" not in metrics.render().decode()


def test_perfdata_of_a_removed_probe_disappears_after_reload(tmp_path: Path, live: tuple[Engine, Metrics]) -> None:
    engine, metrics = live
    metrics.probes.record(Observation(ProbeKey("library", "hampshire", "opac"), Result.OK, 0.02, "OK", 101.0,
                                      perfdata=(("time", "12ms"),)))
    assert 'bcd_probe_perfdata{service="library"' in metrics.render().decode()
    engine.apply_config(config(tmp_path))
    metrics.probes.retain({ProbeKey("payroll", "dorset", "health"), ProbeKey("payroll", "hampshire", "health")})
    assert "bcd_probe_perfdata{" not in metrics.render().decode()
    assert not metrics.probes.perfdata


async def test_early_runs_and_bursts_per_site_are_counted(live: tuple[Engine, Metrics]) -> None:
    from bcd.outputs.metrics import SchedulerCollector
    from bcd.scheduler import Scheduler

    _, metrics = live
    scheduler = Scheduler(lambda obs: None, max_concurrency=10)
    scheduler.stats.fast_runs = 7
    scheduler.stats.bursts["dorset"] += 2
    metrics.register(SchedulerCollector(scheduler.stats))
    text = metrics.render().decode()
    assert sample(text, "bcd_scheduler_fast_runs_total") == 7
    assert sample(text, 'bcd_scheduler_bursts_total{site="dorset"}') == 2
    if shutil.which("promtool") is not None:
        check = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
