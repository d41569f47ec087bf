"""A continuity report's figures against a journal whose answers were worked out by hand (below), written with
the real Journal (chained) into a real SQLite file and read back read-only, as `bcd report` does.

The period is ten days from T0 (2026-07-01). payroll runs on dorset (home) and hampshire; library on both too.
- the daemon ran from before T0 to T0+5d, stopped cleanly, and again from T0+5d+6h to after the period:
  6 h (21,600 s) unobserved, for every service and site.
- dorset: degraded at T0+1d, down 60 s later; payroll failed over (run 1, auto: first failure T0+1d, verified
  T0+1d+590 s, over its 5 m RTO) and hampshire became active at T0+1d+600 s; dorset up again at T0+2d;
  in maintenance from T0+3d for 4 h (14,400 s).
- hampshire (active then) in maintenance from T0+4d for 2 h (7,200 s): left out of payroll's availability.
- payroll failed back to dorset at T0+8d (run 2, operator, 90 s, no failure before it).
- library stayed up; drilled at T0+6d (drill LIBRARY_PASSED: runs 3 out and 4 back, both succeeded; the drill
  succeeded, ended T0+6d+410 s) and at T0+9d (drill LIBRARY_INTERRUPTED: run 7 out succeeded, then the daemon
  stopped: ended `interrupted` at the restart T0+9d+6h, naming no run).
- payroll drilled at T0+9d (drill PAYROLL_FAILED: runs 5 out and 6 back both succeeded, yet the drill failed,
  not back on dorset): payroll has never been drilled successfully, whatever its legs did.

payroll: up 864,000 - 21,600 - 7,200 - 600 = 834,600 s; degraded 60 s; down 540 s:
    availability 834,600 / 835,200 = 99.9282 %.
dorset: up 86,400 + 86,400 + (864,000 - 86,400 - 60 - 86,340 - 86,400 - 14,400 - 21,600 =) 568,800 = 741,600 s,
    degraded 60, down 86,340: 741,600 / 828,000 = 89.5652 %; standby T0+1d+600 s to T0+8d less 6 h = 582,600 s,
    not up 85,800 (down) + 14,400 (maintenance) = 100,200 s: 17.20 % (a risk: over 1 %).
hampshire: up 864,000 - 7,200 - 21,600 = 835,200 s: 100 %.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest

from bcd import config as config_module
from bcd.events import ActiveChanged, DrillFinished, DrillStarted, Event, EventKind, JournalGap, SiteTransition
from bcd.journal import Journal, RunJournal, RunRecord, StepRecord
from bcd.journal.ledger_check import entries, open_readonly
from bcd.journal.uptime import SCHEMA as SPANS_SCHEMA
from bcd.model import RunResult
from bcd.report import ReportError
from bcd.report.compute import compute
from bcd.report.make import make_report
from bcd.report.model import Report
from bcd.report.render_html import render_html
from bcd.report.render_json import render_json
from bcd.report.render_md import render_md
from bcd.report.risks import risks
from tests.helpers.daemon import write_config

T0 = dt.datetime(2026, 7, 1, tzinfo=dt.UTC).timestamp()
D, H = 86400.0, 3600.0
END = T0 + 10 * D


def config_text(state_dir: Path) -> str:
    return f"""
instance: councils
state_dir: {state_dir}
sites: {{dorset: {{}}, hampshire: {{}}}}
runbooks:
  move: {{steps: [{{name: hold, approval: {{timeout: 1h}}}}]}}
services:
  payroll:
    active: dorset
    objectives: {{rto: 5m}}
    failover: {{runbook: move}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
  library:
    active: dorset
    objectives: {{rto: 30m, rpo: 5m}}
    failover: {{runbook: move}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:1/"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:2/"}}}}]}}
"""


def transition(journal: Journal, at: float, service: str, site: str, old: str, new: str) -> None:
    journal.append(Event(EventKind.SITE_TRANSITION, at, service, site, f"{old} to {new}", SiteTransition(old, new)))


def run(runs: RunJournal, service: str, kind: str, trigger: str, moves: tuple[str, str],
        started: float, verified: float, detected: float | None, evidence: dict[str, object]) -> int:
    run_id = runs.create(RunRecord(0, service, "move", kind, trigger, "test", moves[0], moves[1], False, False,
                                   evidence, started, None, "running", "", None, detected, None))
    runs.step_started(StepRecord(run_id, 1, "main", "wait", "wait_healthy", {}, started + 1, None, 0, "running", ""))
    runs.step_finished(run_id, 1, ended=verified, attempts=1, outcome="succeeded", output="")
    runs.finish(run_id, RunResult.SUCCEEDED, verified + 5, "done", verified_at=verified)
    return run_id


LIBRARY_PASSED, LIBRARY_INTERRUPTED = "library@20260707T000000Z", "library@20260710T000000Z"
PAYROLL_FAILED = "payroll@20260710T000000Z"
PAYROLL_FAILED_WHY = "not back on dorset: payroll is active on hampshire (moved by hand during the drill)"
INTERRUPTED_WHY = f"drill {LIBRARY_INTERRUPTED} interrupted: the daemon stopped during it (check bcd status)"


def drill(journal: Journal, service: str, drill_id: str, started: float,
          end: tuple[float, str, str, tuple[int, ...]]) -> None:
    """A round trip dorset → hampshire → dorset journaled as the drill runner does; `end`: (at, result, why,
    runs)."""
    journal.append(Event(EventKind.DRILL_STARTED, started, service, "hampshire", f"drill {drill_id} by test: q",
                         DrillStarted(drill_id, "round_trip", 60.0, "test", "dorset", "hampshire")))
    at, result, why, runs = end
    journal.append(Event(EventKind.DRILL_FINISHED, at, service, None, why,
                         DrillFinished(drill_id, "round_trip", result, runs)))


def write_drills(journal: Journal, runs: RunJournal) -> None:
    """The drills of the docstring: their events and their legs' runs (3 to 7)."""
    drill(journal, "library", LIBRARY_PASSED, T0 + 6 * D,
          (T0 + 6 * D + 410, "succeeded", f"drill {LIBRARY_PASSED} succeeded: hampshire served for 60s", (3, 4)))
    run(runs, "library", "failover", "drill", ("dorset", "hampshire"), T0 + 6 * D, T0 + 6 * D + 200, None,
        {"drill": LIBRARY_PASSED})
    run(runs, "library", "failback", "drill", ("hampshire", "dorset"), T0 + 6 * D + 300, T0 + 6 * D + 400, None,
        {"drill": LIBRARY_PASSED})
    drill(journal, "payroll", PAYROLL_FAILED, T0 + 9 * D, (T0 + 9 * D + 420, "failed", PAYROLL_FAILED_WHY, (5, 6)))
    run(runs, "payroll", "failover", "drill", ("dorset", "hampshire"), T0 + 9 * D, T0 + 9 * D + 200, None,
        {"drill": PAYROLL_FAILED})
    run(runs, "payroll", "failback", "drill", ("hampshire", "dorset"), T0 + 9 * D + 300, T0 + 9 * D + 400, None,
        {"drill": PAYROLL_FAILED})
    drill(journal, "library", LIBRARY_INTERRUPTED, T0 + 9 * D, (T0 + 9 * D + 6 * H, "interrupted", INTERRUPTED_WHY, ()))
    run(runs, "library", "failover", "drill", ("dorset", "hampshire"), T0 + 9 * D, T0 + 9 * D + 200, None,
        {"drill": LIBRARY_INTERRUPTED})


def write_journal(path: Path) -> None:
    journal = Journal(path)
    with journal.transaction():
        for service in ("payroll", "library"):
            for site in ("dorset", "hampshire"):
                transition(journal, T0 - H, service, site, "unknown", "up")
        transition(journal, T0 + D, "payroll", "dorset", "up", "degraded")
        transition(journal, T0 + D + 60, "payroll", "dorset", "degraded", "down")
        journal.append(Event(EventKind.ACTIVE_CHANGED, T0 + D + 600, "payroll", None, "run 1",
                             ActiveChanged("dorset", "hampshire", 1)))
        transition(journal, T0 + 2 * D, "payroll", "dorset", "down", "up")
        transition(journal, T0 + 3 * D, "payroll", "dorset", "up", "maintenance")
        transition(journal, T0 + 3 * D + 4 * H, "payroll", "dorset", "maintenance", "up")
        transition(journal, T0 + 4 * D, "payroll", "hampshire", "up", "maintenance")
        transition(journal, T0 + 4 * D + 2 * H, "payroll", "hampshire", "maintenance", "up")
        journal.append(Event(EventKind.ACTIVE_CHANGED, T0 + 8 * D, "payroll", None, "run 2",
                             ActiveChanged("hampshire", "dorset", 2)))
    runs = RunJournal(journal)
    run(runs, "payroll", "failover", "auto", ("dorset", "hampshire"), T0 + D + 120, T0 + D + 590, T0 + D, {})
    run(runs, "payroll", "failback", "operator", ("hampshire", "dorset"), T0 + 8 * D - 100, T0 + 8 * D - 10, None, {})
    write_drills(journal, runs)
    journal.execute(SPANS_SCHEMA)
    journal.execute("INSERT INTO daemon_spans VALUES (?, ?, ?, 1)", (T0 - 2 * H, T0 + 5 * D, T0 + 5 * D))
    journal.execute("INSERT INTO daemon_spans VALUES (?, ?, ?, 2)", (T0 + 5 * D + 6 * H, END + H, END + H))
    journal.close()


@pytest.fixture
def estate(tmp_path: Path) -> Path:
    write_journal(tmp_path / "state" / "bcd.sqlite")
    return write_config(tmp_path / "bcd.yaml", config_text(tmp_path / "state"))


def report_of(config_path: Path, **kwargs: object) -> Report:
    return make_report(config_module.load(str(config_path)), T0, END, now=END + D, **kwargs)  # type: ignore[arg-type]


def test_availability_matches_the_figures_worked_out_by_hand(estate: Path) -> None:
    report = report_of(estate)
    payroll = next(s for s in report.services if s.name == "payroll")
    assert payroll.availability.ratio == pytest.approx(834_600 / 835_200, abs=1e-4 / 100)  # 0.01 % is 1e-4
    assert f"{payroll.availability.ratio:.6f}" == "0.999282"
    sites = {site.site: site for site in payroll.sites}
    assert sites["dorset"].availability.ratio == pytest.approx(0.895652, abs=1e-6)
    assert sites["hampshire"].availability.ratio == 1.0
    assert sites["dorset"].standby_seconds == 582_600 and sites["dorset"].standby_not_up == 100_200


def test_maintenance_is_shown_apart_and_left_out(estate: Path) -> None:
    payroll = next(s for s in report_of(estate).services if s.name == "payroll")
    assert payroll.availability.seconds["maintenance"] == 7_200
    assert payroll.availability.observed == 835_200  # 864,000 less 7,200 maintenance and 21,600 unobserved
    dorset = next(site for site in payroll.sites if site.site == "dorset")
    assert dorset.availability.seconds["maintenance"] == 14_400


def test_the_daemons_downtime_is_unobserved_not_up(estate: Path) -> None:
    report = report_of(estate)
    for service in report.services:
        assert service.availability.seconds["unobserved"] == 21_600
        for site in service.sites:
            assert site.availability.seconds["unobserved"] == 21_600
    library = next(s for s in report.services if s.name == "library")
    assert library.availability.seconds["up"] == 864_000 - 21_600


def test_incidents_recoveries_drills_and_risks(estate: Path) -> None:
    report = report_of(estate)
    payroll = next(s for s in report.services if s.name == "payroll")
    (incident,) = payroll.incidents
    assert (incident.start, incident.end, incident.site, incident.worst) == (T0 + D, T0 + D + 600, "dorset", "down")
    assert incident.recovery is not None and incident.recovery.run_id == 1
    assert [(r.run_id, r.kind.value, r.timeline.total, r.rto_met) for r in payroll.recoveries] == [
        (1, "failover", 590.0, False), (2, "failback", 90.0, True)]
    assert payroll.last_drill is None  # its one drill failed though both its legs succeeded
    library = next(s for s in report.services if s.name == "library")
    assert library.last_drill == T0 + 6 * D + 410  # the passed drill's end; not the interrupted one's leg
    assert [(r.service, r.kind) for r in report.risks] == [
        ("payroll", "never_drilled"), ("payroll", "no_objective"), ("payroll", "standby_not_up"),
        ("payroll", "objective_missed")]
    assert report.risks[0].text == "no drill has succeeded yet (in the period: 1 failed)"
    assert "standby dorset was not up for 17.20 % of its standby time" in report.risks[2].text


def test_each_drill_has_its_own_outcome_reason_duration_and_runs(estate: Path) -> None:
    report = report_of(estate)
    services = {s.name: s for s in report.services}
    listed = {name: [(d.id, d.kind, d.started, d.result, d.seconds, d.reason, [(r.run_id, r.result.value)
                                                                                for r in d.runs])
                     for d in service.drills] for name, service in services.items()}
    assert listed == {
        "payroll": [(PAYROLL_FAILED, "round_trip", T0 + 9 * D, "failed", 420.0, PAYROLL_FAILED_WHY,
                     [(5, "succeeded"), (6, "succeeded")])],
        "library": [
            (LIBRARY_PASSED, "round_trip", T0 + 6 * D, "succeeded", 410.0,
             f"drill {LIBRARY_PASSED} succeeded: hampshire served for 60s", [(3, "succeeded"), (4, "succeeded")]),
            (LIBRARY_INTERRUPTED, "round_trip", T0 + 9 * D, "interrupted", 6 * H, INTERRUPTED_WHY,
             [(7, "succeeded")])]}  # its run from the run's evidence: the end names none
    assert [d.passed for d in services["library"].drills] == [True, False]
    assert [r.run_id for r in services["payroll"].recoveries] == [1, 2]  # a drill's legs are not moves
    html = render_html(report)
    assert (f"<td><code>{PAYROLL_FAILED}</code></td><td>round_trip</td><td>2026-07-10 00:00 UTC</td>"
            '<td><span class="bad">failed</span></td><td class=num>7m</td>') in html
    assert "run 5 dorset → hampshire succeeded, run 6 hampshire → dorset succeeded" in html
    md = render_md(report)
    assert (f"- drill `{LIBRARY_INTERRUPTED}` (round_trip) 2026-07-10 00:00 UTC: interrupted, 6h; {INTERRUPTED_WHY} "
            "(run 7 dorset → hampshire succeeded)") in md
    drills = {s["name"]: s["drills"] for s in json.loads(render_json(report))["services"]}
    assert [(d["drill"], d["result"], d["passed"], [r["run_id"] for r in d["runs"]]) for d in drills["library"]] == [
        (LIBRARY_PASSED, "succeeded", True, [3, 4]), (LIBRARY_INTERRUPTED, "interrupted", False, [7])]


def test_a_drill_the_journal_holds_no_end_of_is_listed_not_ended(estate: Path, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    journal.append(Event(EventKind.DRILL_STARTED, T0 + 9 * D + 7 * H, "library", "hampshire", "drill under way",
                         DrillStarted("library@later", "round_trip", 60.0, "test", "dorset", "hampshire")))
    journal.close()
    library = next(s for s in report_of(estate).services if s.name == "library")
    (*_, later) = library.drills
    assert (later.id, later.result, later.ended, later.reason, later.runs, later.passed) == (
        "library@later", None, None, "", (), False)
    assert library.last_drill == T0 + 6 * D + 410


def test_the_report_states_the_chain_head_of_its_period(estate: Path, tmp_path: Path) -> None:
    report = report_of(estate)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "bcd.sqlite")) as db:
        seq, digest = max((entry[0], entry[6]) for entry in entries(db) if entry[1] <= END)  # events' own too
    assert report.chain is not None and (report.chain.seq, report.chain.hash) == (seq, digest)


def test_a_service_filter_and_an_unknown_service(estate: Path) -> None:
    only = report_of(estate, services=["library"])
    assert [s.name for s in only.services] == ["library"] and only.risks == ()
    with pytest.raises(ReportError, match="no service named 'nope'"):
        report_of(estate, services=["nope"])


def test_a_journal_without_uptime_records_counts_all_time_observed_and_says_so(estate: Path, tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "bcd.sqlite")) as db:
        db.execute("DROP TABLE daemon_spans")
        db.commit()
    config = config_module.load(str(estate))
    with contextlib.closing(open_readonly(tmp_path / "state" / "bcd.sqlite")) as db:
        report = compute(config, db, T0, END, now=END + D)
    assert all("unobserved" not in s.availability.seconds for s in report.services)
    assert any("predates the daemon's uptime records" in note for note in report.notes)


def test_a_drill_older_than_drills_max_age_is_a_risk(estate: Path) -> None:
    report = report_of(estate)
    assert report.drills_max_age == 365 * D  # the default: this config sets none
    config = config_module.load(str(estate))
    overdue = [r for r in risks(config, report.services, report.period, 3 * D) if r.service == "library"]
    assert [(r.kind, r.text) for r in overdue] == [
        ("drill_overdue", "last drilled 3d 23h before the period's end, longer ago than drills_max_age (3d)")]


def test_a_lag_accepted_by_a_forced_move_is_shown_and_a_risk(estate: Path, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    reason = "olive: test (accepted: data lag of hampshire 12m exceeds rpo 5m) (forced)"
    RunJournal(journal).create(RunRecord(0, "library", "move", "failover", "olive", reason, "dorset", "hampshire",
                                         False, True, {}, T0 + 7 * D, None, "failed", "", None, None, None))
    journal.close()
    library = next(s for s in report_of(estate).services if s.name == "library")
    assert library.lag.accepted == (reason,) and not library.lag.samples
    assert ("library", "objective_missed") in [(r.service, r.kind) for r in report_of(estate).risks]


def test_events_the_journal_lost_and_time_before_its_first_event_are_noted(estate: Path, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    journal.append(Event(EventKind.JOURNAL_GAP, T0 + 2 * D, None, None, "12 events from … were not journaled",
                         JournalGap(12, T0 + D, T0 + 2 * D)))
    journal.append(Event(EventKind.JOURNAL_GAP, T0 - D, None, None, "3 events before the period were not journaled",
                         JournalGap(3, T0 - 2 * D, T0 - D)))
    journal.close()
    notes = report_of(estate).notes
    assert "The journal lost events in the period: 12 events from … were not journaled" in notes
    assert not any("3 events before the period" in note for note in notes)
    only = report_of(estate, services=["payroll"]).notes  # a gap is the journal's: in a report of any service
    assert "The journal lost events in the period: 12 events from … were not journaled" in only
    assert not any("holds no event before" in note for note in notes)
    config = config_module.load(str(estate))
    earlier = make_report(config, T0 - 10 * D, END, now=END + D)
    assert "The journal holds no event before 2026-06-30 23:00 UTC (pruned by journal.keep, or not yet written): " \
           "time before it counts as unknown, left out of availability." in earlier.notes


def test_each_sites_table_has_a_column_for_every_state_it_spent_time_in(estate: Path) -> None:
    report = report_of(estate)
    payroll = next(service for service in report.services if service.name == "payroll")
    md = render_md(report)
    table = md[md.index("## payroll"):].split("\n\n")[2].splitlines()  # after the title and the summary line
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:4] == ["site", "availability", "up", "degraded"] and "down" in header, header
    for site in payroll.sites:  # every state with time has its column: the columns add up to the period
        assert {state for state, seconds in site.availability.seconds.items() if seconds > 0} <= set(header[2:])
    assert "<th>Degraded</th>" in render_html(report)
