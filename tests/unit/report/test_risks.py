"""The risks of a continuity report that the hand-computed journal of test_compute does not raise: a service
without a failover runbook (`no_runbook`), listed with why and counted in the summary."""

from __future__ import annotations

from pathlib import Path

from bcd import config as config_module
from bcd.journal import Journal
from bcd.report.make import make_report
from bcd.report.model import RISK_KINDS
from bcd.report.render_md import render_md
from tests.helpers.daemon import write_config
from tests.unit.report.test_compute import END, T0, D, H, config_text, transition, write_journal

ARCHIVE = """
  archive:
    active: dorset
    objectives: {rto: 4h, rpo: 1h}
    sites:
      dorset: {probes: [{name: health, http: {url: "http://127.0.0.1:1/"}}]}
      hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/"}}]}
"""


def test_a_service_without_a_failover_runbook_is_a_risk_and_one_with_it_is_not(tmp_path: Path) -> None:
    write_journal(tmp_path / "state" / "bcd.sqlite")
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    for site in ("dorset", "hampshire"):
        transition(journal, T0 - H, "archive", site, "unknown", "up")
    journal.close()
    path = write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state") + ARCHIVE)
    report = make_report(config_module.load(str(path)), T0, END, now=END + D)
    archive = next(s for s in report.services if s.name == "archive")
    assert archive.runbook is None
    assert [(r.kind, r.text) for r in report.risks if r.service == "archive"] == [
        ("never_drilled", "never drilled: recovery has not been rehearsed"),
        ("no_runbook", "no failover runbook: a failure can only be handled by hand")]
    assert [r.service for r in report.risks if r.kind == "no_runbook"] == ["archive"]  # payroll, library have one
    assert report.risk_counts()["no_runbook"] == 1
    md = render_md(report)
    assert f"{RISK_KINDS['no_runbook']}: 1" in md
    assert "- **archive**: no failover runbook: a failure can only be handled by hand" in md


def test_a_standby_not_yet_probed_is_no_standby_time_and_no_risk(tmp_path: Path) -> None:
    """archive is added (a reload) half-way through the period: its sites are `unknown` until first probed, time
    left out of availability; nor is it time its standby was not up (it was no standby yet)."""
    write_journal(tmp_path / "state" / "bcd.sqlite")
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    for site in ("dorset", "hampshire"):
        transition(journal, T0 + 5 * D + 7 * H, "archive", site, "unknown", "up")
    journal.close()
    path = write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state") + ARCHIVE)
    report = make_report(config_module.load(str(path)), T0, END, now=END + D)
    archive = next(s for s in report.services if s.name == "archive")
    hampshire = next(site for site in archive.sites if site.site == "hampshire")
    assert hampshire.standby_seconds == 5 * D - 7 * H and hampshire.standby_not_up == 0
    assert not any(r.kind == "standby_not_up" for r in report.risks if r.service == "archive")
