"""A state_dir that fills up: the daemon (a subprocess) on a real 2 MB tmpfs, a filler file taking the rest.

While the journal cannot be written a site that goes down is still logged and alerted on, /readyz says why
it is not ready, the automatic failover does not start and an operator's is refused with 503; once the filler
is deleted what was queued is written in order, /readyz is 200 again, and the failover runs."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.files import fill, small_tmpfs
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import eventually
from tests.integration.runbooks.daemon_kit import WAIT, Estate

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root (CI runs as root)")


def journaled_events(state_dir: Path) -> list[tuple[str, Any, Any, str]]:
    with contextlib.closing(sqlite3.connect(f"file:{state_dir / 'bcd.sqlite'}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT kind, service, site, reason FROM events ORDER BY id").fetchall()
    return [tuple(row) for row in rows]


def value(metrics: str, name: str) -> float:
    """The value of a family without labels."""
    return float(next(line for line in metrics.splitlines() if line.startswith(name + " ")).split()[1])


def fired(hooks: Recorder, alertname: str) -> bool:
    notifications = [request.json() for request in hooks.requests]
    return any(alert["labels"]["alertname"] == alertname for notification in notifications
               if notification["status"] == "firing" for alert in notification["alerts"])


async def test_a_full_state_dir_is_loud_refuses_runs_and_loses_nothing_it_can_keep(
    estate: Estate, tmp_path: Path
) -> None:
    async with Recorder() as hooks:
        with small_tmpfs(estate.state_dir):
            config = estate.config(alerts={"webhooks": [{"url": hooks.url("/hook"), "attempts": 2}]})
            daemon = await estate.start(config)
            filler = fill(estate.state_dir)
            estate.dorset.status = 503

            down = await daemon.wait_log(lambda e: e.get("event") == "site_transition" and e.get("site") == "dorset"
                                         and e.get("to_state") == "down", WAIT)
            assert down.get("journaled") is False
            failed = await daemon.wait_log(lambda e: e.get("event") == "journal_write_failed")
            assert failed["error"] == "database or disk is full"

            # the alert goes out (bcd's own webhook), the service says why nothing runs
            await eventually(lambda: fired(hooks, "BcdSiteDown"), WAIT, "BcdSiteDown sent to the webhook")
            blocked = await daemon.wait_service(lambda s: s.get("guard") == "journal_unwritable")
            assert blocked["status"] == "blocked" and "journal cannot be written" in blocked["reason"]
            await eventually(lambda: fired(hooks, "BcdFailoverBlocked"), WAIT, "BcdFailoverBlocked sent")
            status, body = await daemon.get("/readyz")
            assert status == 503 and "journal cannot be written: database or disk is full since" in body
            metrics = await daemon.metrics()
            assert value(metrics, "bcd_journal_write_errors_total") > 0
            assert value(metrics, "bcd_journal_queued_entries") > 0 and value(metrics, "bcd_journal_writable") == 0

            refused = await daemon.transfer("failover", force=True)
            assert refused.status == 503 and refused.content_type == "application/problem+json"
            assert "journal cannot be written" in refused.body["detail"]
            assert estate.steps.requests == []  # no step ran
            logged = [(e["event"], e.get("service"), e.get("site"), e.get("reason"))
                      for e in daemon.log_lines if e.get("journaled") is False]

            filler.unlink()
            recovered = await daemon.wait_log(lambda e: e.get("event") == "journal_recovered", WAIT)
            assert recovered["written"] >= len(logged) and recovered["dropped"] == 0
            await daemon.wait_ready(WAIT)
            events = journaled_events(estate.state_dir)
            queued = [event[:3] for event in logged]
            start = [event[:3] for event in events].index(queued[0])
            assert [event[:3] for event in events[start:start + len(queued)]] == queued  # in order
            assert ("site_transition", "payroll", "dorset") in queued

            # the journal is back: the automatic failover the journal held runs now
            run = await daemon.wait_first_run()
            assert run["result"] == "succeeded" and len(estate.steps.requests) == 1
            await daemon.stop()
