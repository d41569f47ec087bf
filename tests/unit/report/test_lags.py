"""Data lag in a continuity report, from the journal's `data_lag` events (bcd.lag_journal) written with the real
Journal into the estate of test_compute (library: RPO 5m, sites dorset and hampshire; payroll: no RPO):

- hampshire went over the RPO (360 s) an hour before the period and back within it at T0+600 s: 600 s over in
  the period; over again at T0+1d (420 s), its maximum 450 s written at T0+1d+300 s, back within at T0+1d+320 s:
  320 s more. Worst 450 s, over the RPO for 920 s.
- dorset: one maximum, 12 s. A maximum after the period's end is not counted.
"""

from __future__ import annotations

import json
from pathlib import Path

from bcd.events import DataLag, Event, EventKind
from bcd.journal import Journal
from bcd.report.model import SiteLag
from bcd.report.render_html import render_html
from bcd.report.render_json import render_json
from bcd.report.render_md import render_md
from tests.unit.report.test_compute import (
    END,
    T0,
    D,
    H,
    estate,  # noqa: F401 - the fixture
    report_of,
)

RPO = 300.0
LAGS = [  # (at, site, payload)
    (T0 - H, "hampshire", DataLag("crossing", 360.0, True, RPO)),
    (T0 + 600, "hampshire", DataLag("crossing", 120.0, False, RPO)),
    (T0 + D, "hampshire", DataLag("crossing", 420.0, True, RPO)),
    (T0 + D + 300, "hampshire", DataLag("max", 450.0, True, RPO, T0 + D)),
    (T0 + D + 320, "hampshire", DataLag("crossing", 100.0, False, RPO)),
    (T0 + 2 * D, "dorset", DataLag("max", 12.0, False, RPO, T0 + 2 * D - 300)),
    (END + H, "hampshire", DataLag("max", 9999.0, True, RPO, END)),
]


def write_lags(path: Path) -> None:
    journal = Journal(path)
    for at, site, payload in LAGS:
        journal.append(Event(EventKind.DATA_LAG, at, "library", site, f"lag {payload.lag:g} s", payload))
    journal.close()


def test_the_worst_lag_and_the_time_over_the_rpo_per_site_and_a_risk(estate: Path, tmp_path: Path) -> None:  # noqa: F811
    write_lags(tmp_path / "state" / "bcd.sqlite")
    report = report_of(estate)
    library = next(s for s in report.services if s.name == "library")
    assert library.lag.samples and library.lag.worst == 450.0
    assert library.lag.sites == (SiteLag("hampshire", 450.0, 920.0, True), SiteLag("dorset", 12.0, 0.0, False))
    payroll = next(s for s in report.services if s.name == "payroll")
    assert not payroll.lag.samples and payroll.lag.sites == ()
    assert [(r.service, r.kind, r.text) for r in report.risks if r.kind == "lag_over_rpo"] == [
        ("library", "lag_over_rpo", "data lag of hampshire reached 7m 30s against an RPO of 5m, over it for "
                                    "15m 20s: a failover there would have lost more data than promised")]
    assert report.risk_counts()["lag_over_rpo"] == 1
    assert not any("no data-lag events" in note for note in report.notes)
    shown = "worst 7m 30s against an RPO of 5m: hampshire 7m 30s, over the RPO for 15m 20s; dorset 12s"
    assert shown in render_html(report) and shown in render_md(report)
    data = next(s for s in json.loads(render_json(report))["services"] if s["name"] == "library")["data_lag"]
    assert data["worst"] == 450.0 and data["sites"][0] == {"site": "hampshire", "worst": 450.0,
                                                          "over_seconds": 920.0, "exceeded": True}


def test_without_lag_events_the_report_says_it_cannot_tell(estate: Path) -> None:  # noqa: F811
    report = report_of(estate)
    assert all(not s.lag.samples for s in report.services)
    assert not any(r.kind == "lag_over_rpo" for r in report.risks)
    assert any("holds no data-lag events" in note for note in report.notes)


def test_a_service_that_measures_no_lag_says_so_and_one_that_does_says_the_journal_has_none(
        estate: Path) -> None:  # noqa: F811
    text = estate.read_text()
    plain = 'hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/"}}]}'
    measured = ('hampshire: {probes: [{name: health, http: {url: "http://127.0.0.1:2/", json_values: {lag: lag}}}], '
                'data_lag: {probe: health, value: lag}}')
    head, _, tail = text.rpartition(plain)  # library's hampshire (payroll's comes first)
    estate.write_text(head + measured + tail)
    report = report_of(estate)
    library, payroll = (next(s for s in report.services if s.name == name) for name in ("library", "payroll"))
    assert library.lag.measured and not library.lag.samples
    assert not payroll.lag.measured
    html, md = render_html(report), render_md(report)
    assert html.count("Not journaled: the journal holds no data-lag events") == 1  # library's only
    assert md.count("not journaled (no samples)") == 1
    assert "Not measured: no site of payroll names a data_lag." in html
    assert "Data lag: not measured (no site names a data_lag)" in md
    data = {s["name"]: s["data_lag"] for s in json.loads(render_json(report))["services"]}
    assert data["payroll"]["measured"] is False and data["library"]["measured"] is True
