"""Site lost, end to end: `bcd run` as a subprocess probing real HTTP sites, a recording HTTP server on loopback
standing in for Alertmanager. Every service of dorset down → a `site_lost` event naming them, one BcdSiteLost
page with the list, `bcd_site_lost{site="dorset"} 1`; dorset back → `site_recovered` and the page resolves."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers.daemon import DaemonProcess, free_port
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget

SERVICES = ("directory", "payroll", "sql")


def config(tmp_path: Path, port: int, dorset: HttpTarget, hampshire: HttpTarget, receiver: Recorder) -> str:
    sites = {"dorset": {"probes": [{"name": "health", "http": {"url": dorset.url}}]},
             "hampshire": {"probes": [{"name": "health", "http": {"url": hampshire.url}}]}}
    return json.dumps({
        "instance": "test-bcd", "state_dir": str(tmp_path / "state"), "server": {"listen": f"127.0.0.1:{port}"},
        "sites": {"dorset": {}, "hampshire": {}},
        "defaults": {"interval": "200ms", "timeout": "150ms", "rise": 1, "fall": 2},
        "services": {name: {"active": "dorset", "sites": sites} for name in SERVICES},
        "alerts": {"alertmanager": {"urls": [receiver.url()], "resend": "500ms"}},
    })


def site_lost_alerts(receiver: Recorder) -> list[dict[str, Any]]:
    return [alert for request in receiver.to("/api/v2/alerts") for alert in request.json()
            if alert["labels"]["alertname"] == "BcdSiteLost"]


def lost_metric(metrics: str, site: str) -> float:
    prefix = f'bcd_site_lost{{site="{site}"}} '
    return float(next(line for line in metrics.splitlines() if line.startswith(prefix)).removeprefix(prefix))


async def test_a_site_with_every_service_down_is_lost_once_then_recovers(tmp_path: Path) -> None:
    dorset, hampshire = await HttpTarget().start(), await HttpTarget().start()
    try:
        async with Recorder() as receiver:
            port = free_port()
            path = tmp_path / "bcd.yaml"
            path.write_text(config(tmp_path, port, dorset, hampshire, receiver))
            daemon = DaemonProcess(path, port)
            await daemon.start()
            try:
                await daemon.wait_ready()
                assert lost_metric(await daemon.metrics(), "dorset") == 0
                dorset.status = 503
                lost = await daemon.wait_log(lambda e: e.get("event") == "site_lost")
                assert (lost["site"], lost["services"]) == ("dorset", list(SERVICES))
                assert lost["reason"] == "site dorset lost: every service probed there is down (directory, payroll, sql)"
                events = (await daemon.get_json("/api/v1/events?limit=500"))["events"]
                journaled = [event for event in events if event["kind"] == "site_lost"]
                assert [(e["site"], e["service"], e["services"], e["plans"]) for e in journaled] == [
                    ("dorset", None, list(SERVICES), [])]

                posts = len(receiver.to("/api/v2/alerts"))
                await receiver.wait_for(posts + 2, "/api/v2/alerts")  # resent: still one alert, not one per service
                pages = site_lost_alerts(receiver)
                assert {json.dumps(alert["labels"], sort_keys=True) for alert in pages} == {json.dumps(
                    {"alertname": "BcdSiteLost", "instance": "test-bcd", "severity": "critical", "site": "dorset"},
                    sort_keys=True)}
                assert pages[0]["annotations"]["description"].startswith(
                    "down in dorset: directory, payroll, sql; no recovery plan is configured for dorset")
                metrics = await daemon.metrics()
                assert (lost_metric(metrics, "dorset"), lost_metric(metrics, "hampshire")) == (1, 0)
                assert 'bcd_alerts_firing{alertname="BcdSiteLost"} 1' in metrics

                dorset.status = 200
                recovered = await daemon.wait_log(lambda e: e.get("event") == "site_recovered")
                assert recovered["site"] == "dorset"
                assert recovered["reason"].startswith("site dorset no longer lost after ")

                async def resolved() -> bool:
                    last = site_lost_alerts(receiver)[-1]
                    ends = last.get("endsAt")
                    return ends is not None and _time(ends) <= time.time()

                await daemon.wait_until(resolved)
                assert lost_metric(await daemon.metrics(), "dorset") == 0
            finally:
                await daemon.stop()
    finally:
        await dorset.stop()
        await hampshire.stop()


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
