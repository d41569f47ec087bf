"""A drill's runs in `bcd_runbook_runs_total` carry trigger="drill", which BcdRunbookRunUnsuccessful leaves out
(prometheus/alerts.yml; promtool cases in alerts.test.yml): a plan drill's moves too, though their trigger is
`plan`; and a plan drill's plan run is not counted in `bcd_plan_runs_total` (BcdPlanRunFailed's): it is the
drill's (the real daemon, a plan drill of one service on loopback HTTP targets)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.api import VIEWER, api_daemon
from tests.integration.runbooks.daemon_kit import sample
from tests.integration.test_drills import both_up, finished
from tests.integration.test_plan_drills import PLAN_CONFIG


async def test_a_plan_drills_runs_are_counted_as_a_drills(tmp_path: Path) -> None:
    async with api_daemon(tmp_path, PLAN_CONFIG) as (daemon, _, _):
        await both_up(daemon)
        status, _, body = await daemon.call("POST", "/api/v1/plans/evacuate/drill", body={"reason": "plan test"})
        assert status == 202, body
        assert (await finished(daemon))["result"] == "succeeded"
        metrics = await daemon.metrics_with(VIEWER)
        assert sample(metrics, "bcd_runbook_runs_total", service="payroll", trigger="drill", result="succeeded") == 2
        assert sample(metrics, "bcd_runbook_runs_total", service="payroll", trigger="operator",
                      result="succeeded") in (None, 0.0), metrics
        assert sample(metrics, "bcd_plan_runs_total", plan="evacuate", result="succeeded") == 0, metrics
