"""The root cause pages once, end to end: `bcd run` as a subprocess probing real HTTP sites, a recording HTTP
server on loopback standing in for Alertmanager. A dead dependency and its 10 dependents down in dorset send one
BcdSiteDown; the dependents' alerts carry impacted_by (API, status page, log, bcd_alerts_suppressed) and are
not sent until the dependency is up again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import DaemonProcess, free_port
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget

APPS = [f"app{number}" for number in range(10)]


def config(tmp_path: Path, port: int, targets: dict[str, HttpTarget], receiver: Recorder) -> dict[str, Any]:
    def service(dorset: HttpTarget, depends_on: list[str]) -> dict[str, Any]:
        return {"active": "dorset", "depends_on": depends_on, "sites": {
            "dorset": {"probes": [{"name": "health", "http": {"url": dorset.url}}]},
            "hampshire": {"probes": [{"name": "health", "http": {"url": targets["hampshire"].url}}]}}}

    services = {"directory": service(targets["directory"], [])}
    services.update({name: service(targets["apps"], ["directory"]) for name in APPS})
    return {
        "instance": "test-bcd", "state_dir": str(tmp_path / "state"), "server": {"listen": f"127.0.0.1:{port}"},
        "sites": {"dorset": {}, "hampshire": {}},
        "defaults": {"interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2},
        "services": services,
        "alerts": {"alertmanager": {"urls": [receiver.url()], "resend": "500ms"}},
    }


@pytest.fixture
async def targets() -> AsyncIterator[dict[str, HttpTarget]]:
    started = {name: await HttpTarget().start() for name in ("directory", "apps", "hampshire")}
    yield started
    for target in started.values():
        await target.stop()


def sent(receiver: Recorder) -> list[dict[str, Any]]:
    """Every alert object POSTed to the receiver, in order."""
    return [alert for request in receiver.to("/api/v2/alerts") for alert in request.json()]


def firing_site_downs(receiver: Recorder) -> set[str]:
    """The services whose BcdSiteDown in dorset was ever sent to the receiver."""
    return {alert["labels"]["service"] for alert in sent(receiver)
            if alert["labels"]["alertname"] == "BcdSiteDown" and alert["labels"]["site"] == "dorset"}


async def suppressed(daemon: DaemonProcess) -> float:
    for line in (await daemon.metrics()).splitlines():
        if line.startswith('bcd_alerts_suppressed{alertname="BcdSiteDown"} '):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("bcd_alerts_suppressed is not exposed")


async def test_a_dead_dependency_and_ten_dependents_page_once(tmp_path: Path,
                                                                targets: dict[str, HttpTarget]) -> None:
    async with Recorder() as receiver:
        port = free_port()
        path = tmp_path / "bcd.yaml"
        path.write_text(json.dumps(config(tmp_path, port, targets, receiver)))
        daemon = DaemonProcess(path, port)
        await daemon.start()
        try:
            await daemon.wait_ready()
            targets["directory"].status = 503
            await daemon.wait_log(lambda e: e.get("event") == "alert_firing" and e.get("service") == "directory")
            targets["apps"].status = 503
            for name in APPS:
                await daemon.wait_log(lambda e, name=name: e.get("event") == "alert_suppressed"  # type: ignore[misc]
                                      and e.get("service") == name and e.get("impacted_by") == "directory")
            assert await suppressed(daemon) == 10
            posts = len(receiver.to("/api/v2/alerts"))
            await receiver.wait_for(posts + 2, "/api/v2/alerts")  # two resends later: nothing else went out
            assert firing_site_downs(receiver) == {"directory"}

            app = await daemon.get_json("/api/v1/services/app3")
            assert (app["sites"]["dorset"]["state"], app["sites"]["dorset"]["impacted_by"]) == ("down", "directory")
            assert app["sites"]["hampshire"]["impacted_by"] is None
            directory = await daemon.get_json("/api/v1/services/directory")
            assert directory["sites"]["dorset"]["impacted_by"] is None
            status, page = await daemon.get("/")
            assert status == 200 and page.count('<span class="impacted">impacted by directory</span>') == 10

            targets["directory"].status = 200  # the root cause is gone: the dependents' own alerts page now
            for name in APPS:
                await daemon.wait_log(lambda e, name=name: e.get("event") == "alert_firing"  # type: ignore[misc]
                                      and e.get("service") == name and e.get("site") == "dorset")
            assert await suppressed(daemon) == 0
            await daemon.wait_until(lambda: _sent_all(receiver))
        finally:
            await daemon.stop()


async def _sent_all(receiver: Recorder) -> bool:
    return firing_site_downs(receiver) == {"directory", *APPS}
