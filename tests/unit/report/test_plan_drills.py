"""The continuity report lists the drills of recovery plans started in its period (from the journal's
`drill_started` / `drill_finished` events of `drill_kind: plan`, which name no service) with their outcome, in
HTML, Markdown and JSON; a report without any says nothing of them."""

from __future__ import annotations

import json
from pathlib import Path

from bcd.events import DrillFinished, DrillStarted, Event, EventKind
from bcd.journal import Journal
from bcd.report.model import PlanDrill
from bcd.report.render_html import render_html
from bcd.report.render_json import render_json
from bcd.report.render_md import render_md
from tests.unit.report.test_compute import T0, D, estate, report_of

SHARED_FIXTURES = (estate,)


def drill(journal: Journal, at: float, drill_id: str, ended: str | None) -> None:
    journal.append(Event(EventKind.DRILL_STARTED, at, None, "hampshire", f"drill {drill_id} of plan evacuate",
                         DrillStarted(drill_id, "plan", 60.0, "drills", "dorset", "hampshire", "quarterly", at,
                                      "evacuate")))
    if ended is not None:
        journal.append(Event(EventKind.DRILL_FINISHED, at + 600, None, None,
                             f"drill {drill_id} of plan evacuate {ended}: 2 service(s) back on dorset",
                             DrillFinished(drill_id, "plan", ended, (7, 8), "quarterly", "evacuate")))


def test_the_plan_drills_of_the_period_are_listed_with_their_outcome(estate: Path, tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state" / "bcd.sqlite")
    drill(journal, T0 - D, "plan:evacuate@before", "succeeded")  # before the period: left out
    drill(journal, T0 + 7 * D, "plan:evacuate@1", "aborted")
    drill(journal, T0 + 9 * D, "plan:evacuate@2", None)  # still under way at the period's end
    journal.close()
    report = report_of(estate)
    assert report.plan_drills == (
        PlanDrill("plan:evacuate@1", "evacuate", T0 + 7 * D, "aborted", T0 + 7 * D + 600,
                  "drill plan:evacuate@1 of plan evacuate aborted: 2 service(s) back on dorset"),
        PlanDrill("plan:evacuate@2", "evacuate", T0 + 9 * D, None, None, ""))
    html = render_html(report)
    assert '<section id="plan-drills"><h2>Plan drills</h2>' in html
    assert '<td><code>plan:evacuate@1</code></td><td>2026-07-08 00:00 UTC</td><td><span class="bad">aborted</span>' in html
    assert '<span class="bad">not ended</span>' in html
    md = render_md(report)
    assert "## Plan drills" in md
    assert "- plan evacuate, drill `plan:evacuate@1`, 2026-07-08 00:00 UTC: aborted; drill plan:evacuate@1" in md
    listed = json.loads(render_json(report))["plan_drills"]
    assert [(d["drill"], d["result"], d["passed"]) for d in listed] == [
        ("plan:evacuate@1", "aborted", False), ("plan:evacuate@2", None, False)]


def test_a_report_without_plan_drills_says_nothing_of_them(estate: Path) -> None:
    report = report_of(estate)
    assert report.plan_drills == ()
    assert "Plan drills" not in render_html(report) and "Plan drills" not in render_md(report)
    assert json.loads(render_json(report))["plan_drills"] == []
