"""A dependency in planned maintenance, end to end (`bcd run` as a subprocess, real HTTP targets, a recorder for
Alertmanager and the runbooks' steps). `directory` is taken down in dorset under a maintenance window; `payroll`,
which needs it, goes down in dorset too. What an operator expects:

- nothing pages: directory's site is in maintenance, and payroll's BcdSiteDown carries
  `impacted_by="directory"` (held, not sent), the maintenance named beside it (API, status page);
- payroll's automatic failover does not race the maintenance: moving payroll away from its directory would not
  help, so it waits (`failover_pending`, `waiting_for_dependency`, the maintenance in the reason) — not
  `blocked` (`dependency_failed`): the dependency has not failed, it is being worked on;
- the maintenance over and directory back, payroll is up where it was: no runbook ever ran."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.api import OPERATOR, VIEWER, Api, sha
from tests.helpers.daemon import free_port, running, write_config
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget


def config(state: Path, port: int, targets: dict[str, HttpTarget], recorder: Recorder, pager: Recorder) -> str:
    def service(dorset: HttpTarget, **fields: Any) -> dict[str, Any]:
        return {"active": "dorset", "failover": {"runbook": "move", "mode": "auto", "cooldown": "0s"}, **fields,
                "sites": {
                    "dorset": {"probes": [{"name": "health", "http": {"url": dorset.url}}]},
                    "hampshire": {"probes": [{"name": "health", "http": {"url": targets["hampshire"].url}}]}}}

    return json.dumps({
        "instance": "test-bcd", "state_dir": str(state), "server": {"listen": f"127.0.0.1:{port}"},
        "sites": {"dorset": {}, "hampshire": {}},
        "defaults": {"interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2},
        "auth": {"tokens": [{"name": "olive", "role": "operator", "sha256": sha(OPERATOR)},
                            {"name": "grafana", "role": "viewer", "sha256": sha(VIEWER)}]},
        "runbooks": {"move": {"steps": [{"name": "switch", "http": {"url": recorder.url("/{service}")}}]}},
        "services": {"directory": service(targets["directory"]),
                     "payroll": service(targets["payroll"], depends_on=["directory"]),
                     "canary": service(targets["canary"], failover=None)},  # down on its own: it pages
        "alerts": {"alertmanager": {"urls": [pager.url()], "resend": "500ms"}},
    })


def sent(pager: Recorder) -> list[tuple[str, str]]:
    """(alertname, service) of every alert posted to Alertmanager."""
    return [(alert["labels"]["alertname"], alert["labels"].get("service", ""))
            for request in pager.to("/api/v2/alerts") for alert in request.json()]


async def service(daemon: Api, name: str) -> dict[str, Any]:
    status, _, body = await daemon.call("GET", f"/api/v1/services/{name}", token=VIEWER)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


@pytest.fixture
async def targets() -> AsyncIterator[dict[str, HttpTarget]]:
    started = {name: await HttpTarget().start() for name in ("directory", "payroll", "canary", "hampshire")}
    yield started
    for target in started.values():
        await target.stop()


async def test_a_dependency_in_maintenance_pages_nobody_and_its_dependent_waits(
        tmp_path: Path, targets: dict[str, HttpTarget]) -> None:
    async with Recorder() as recorder, Recorder() as pager:
        port = free_port()
        path = write_config(tmp_path / "bcd.yaml", config(tmp_path / "state", port, targets, recorder, pager))
        async with running(Api(path, port), timeout=30) as daemon:
            status, _, body = await daemon.call("POST", "/api/v1/services/directory/maintenance", body={
                "site": "dorset", "duration": "1h", "reason": "Dorset patching"})
            assert status == 201, body
            targets["directory"].status = targets["payroll"].status = 503  # the patching takes both down
            targets["canary"].status = 503

            async def payroll(check: Any) -> dict[str, Any]:
                async def seen() -> dict[str, Any] | None:
                    found = await service(daemon, "payroll")
                    return found if check(found) else None
                return await daemon.wait_until(seen, timeout=30)  # type: ignore[no-any-return]

            waiting = await payroll(lambda s: s["sites"]["dorset"]["state"] == "down" and s["guard"] == "waiting_for_"
                                    "dependency" and "in maintenance" in s["reason"])
            assert waiting["status"] == "failover_pending", waiting
            assert waiting["reason"].startswith("payroll: failover to hampshire waits for directory (in maintenance "
                                                "at dorset: olive: Dorset patching);"), waiting["reason"]
            dorset = waiting["sites"]["dorset"]
            assert (dorset["impacted_by"], dorset["impacted_maintenance"]) == ("directory", "directory: olive: Dorset patching")
            await daemon.wait_log(lambda e: e.get("event") == "alert_suppressed" and e.get("service") == "payroll"
                                  and e.get("impacted_by") == "directory")
            status, _, page = await daemon.call("GET", "/", token=VIEWER)
            assert status == 200 and ('<span class="impacted">impacted by directory (in maintenance: directory: '
                                      'olive: Dorset patching)</span>') in page
            await daemon.wait_log(lambda e: e.get("event") == "alert_firing" and e.get("service") == "canary")
            posts = len(pager.to("/api/v2/alerts"))
            await pager.wait_for(posts + 2, "/api/v2/alerts")  # two resends later: only the canary pages
            assert {name for _, name in sent(pager)} == {"canary"}, sent(pager)
            directory = await service(daemon, "directory")
            assert (directory["status"], directory["guard"]) == ("blocked", "maintenance")

            targets["directory"].status = targets["payroll"].status = 200  # the patching is done
            back = await payroll(lambda s: s["status"] == "ok")

            async def directory_passes() -> bool:
                probe = (await service(daemon, "directory"))["sites"]["dorset"]["probes"]["health"]
                return probe["result"] == "ok"  # seen up under the maintenance, before it ends

            await daemon.wait_until(directory_passes, timeout=30)
            status, _, body = await daemon.call("DELETE", "/api/v1/services/directory/maintenance")
            assert status == 200, body
            await daemon.wait_until(lambda: _ok(daemon, "directory"), timeout=30)
            assert back["active"] == "dorset" and recorder.requests == []  # no runbook raced the maintenance
            assert {name for _, name in sent(pager)} == {"canary"}, sent(pager)


async def _ok(daemon: Api, name: str) -> bool:
    return (await service(daemon, name))["status"] == "ok"
