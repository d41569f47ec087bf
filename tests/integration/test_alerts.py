"""Alerts end to end: the real daemon (subprocess) → a real Alertmanager, a real signed webhook receiver,
receivers that are down or silent, resends with a moving endsAt, and a reload that adds a receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bcd.outputs.alerts.delivery import receiver_label, signature
from tests.helpers import free_port, serve_http, silent_server, stop_process
from tests.helpers.daemon import DaemonProcess, Daemons, metric_value, site_is, status_is
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget, two_sites

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
SECRET = "s3cret-webhook-key"

CONFIG = """
instance: test-bcd
state_dir: {state_dir}
server: {{listen: "127.0.0.1:{port}"}}
sites: {{dorset: {{}}, hampshire: {{}}}}
defaults: {{interval: 200ms, timeout: 150ms, rise: 2, fall: 2}}
services:
  payroll:
    active: dorset
    labels: {{owner: dorset-cc, tier: "1", team: payroll-oncall}}
    sites:
      dorset: {{probes: [{{name: health, http: {{url: "{dorset}"}}}}]}}
      hampshire: {{probes: [{{name: health, http: {{url: "{hampshire}"}}}}]}}
alerts:
{alerts}
"""


class Estate:
    """Two real HTTP targets and a daemon config that alerts to the receivers a test names."""

    def __init__(self, tmp_path: Path, dorset: HttpTarget, hampshire: HttpTarget) -> None:
        self.tmp_path = tmp_path
        self.dorset = dorset
        self.hampshire = hampshire
        self.port = free_port()
        self.config_path = tmp_path / "bcd.yaml"
        (tmp_path / "webhook_secret").write_text(SECRET + "\n")

    def write_config(self, alerts: str) -> None:
        self.config_path.write_text(CONFIG.format(
            state_dir=self.tmp_path / "state", port=self.port, dorset=self.dorset.url, hampshire=self.hampshire.url,
            alerts=alerts,
        ))

    async def daemon(self, daemons: Daemons, alerts: str) -> DaemonProcess:
        self.write_config(alerts)
        env = {"CREDENTIALS_DIRECTORY": str(self.tmp_path)}
        process = await daemons.start(DaemonProcess(self.config_path, self.port, env=env))
        await process.wait_until(lambda: status_is(process, "payroll", "ok"))
        return process


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[Estate]:
    async with two_sites() as (dorset, hampshire):
        yield Estate(tmp_path, dorset, hampshire)


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """A real Alertmanager (Debian's prometheus-alertmanager) on a free loopback port, no clustering."""
    if not Path(ALERTMANAGER).exists() and shutil.which("prometheus-alertmanager") is None:
        pytest.skip("prometheus-alertmanager is not installed (make deps installs it)")
    directory = tmp_path / "alertmanager"
    directory.mkdir()
    (directory / "am.yml").write_text('route: {receiver: "null", group_wait: 1s}\nreceivers: [{name: "null"}]\n')
    port = free_port()
    log = directory / "am.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [ALERTMANAGER, f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             f"--storage.path={directory}", f"--config.file={directory / 'am.yml'}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield url
    finally:
        stop_process(process)


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"alertmanager did not become ready:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)  # polling a condition with a deadline, not synchronising on time


# -- helpers ---------------------------------------------------------------------------------------------


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def am_alerts(url: str, alertname: str) -> list[dict[str, Any]]:
    """What Alertmanager holds as active for `alertname`."""
    async with aiohttp.ClientSession() as session, session.get(
        url + "/api/v2/alerts", params={"active": "true", "filter": f'alertname="{alertname}"'}
    ) as response:
        assert response.status == 200
        alerts: list[dict[str, Any]] = await response.json()
        return alerts


async def poll(check: Any, timeout: float = 15.0, every: float = 0.1) -> Any:
    """Poll an async check until it returns something truthy, with a deadline."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(every)


def site_down_payroll_dorset(alert: dict[str, Any]) -> bool:
    labels = alert["labels"]
    return bool(labels.get("alertname") == "BcdSiteDown" and labels.get("service") == "payroll"
                and labels.get("site") == "dorset")


# -- a real Alertmanager ----------------------------------------------------------------------------------


async def test_site_down_reaches_alertmanager_with_labels_then_resolves(
    estate: Estate, alertmanager: str, daemons: Daemons
) -> None:
    daemon = await estate.daemon(
        daemons,
        f'  alertmanager: {{urls: ["{alertmanager}"], resend: 500ms}}\n'
        '  runbook_url: "https://wiki.example/bcd/{alertname}"\n'
    )
    assert await am_alerts(alertmanager, "BcdSiteDown") == []

    estate.dorset.status = 503

    async def firing() -> dict[str, Any] | None:
        return next((a for a in await am_alerts(alertmanager, "BcdSiteDown") if site_down_payroll_dorset(a)), None)

    alert = await poll(firing)
    assert alert["labels"] == {
        "alertname": "BcdSiteDown", "service": "payroll", "site": "dorset", "severity": "critical",
        "instance": "test-bcd", "owner": "dorset-cc", "tier": "1", "team": "payroll-oncall",
    }
    annotations = alert["annotations"]
    assert annotations["summary"] == "payroll is down in dorset (active site)"
    assert annotations["description"].startswith("2 consecutive failures of health") and "503" in annotations["description"]
    assert annotations["runbook_url"] == "https://wiki.example/bcd/BcdSiteDown"
    assert alert["generatorURL"] == f"http://127.0.0.1:{estate.port}/api/v1/services/payroll"
    assert alert["status"]["state"] == "active"
    first_end = parse_time(alert["endsAt"])
    assert 0 < first_end - time.time() <= 4 * 0.5 + 0.5  # endsAt ≈ now + 4 x resend

    async def resent() -> bool:  # the resend moves endsAt forward
        again = await firing()
        return again is not None and parse_time(again["endsAt"]) > first_end

    await poll(resent)
    metrics = await daemon.metrics()
    assert metric_value(metrics, 'bcd_alerts_firing{alertname="BcdSiteDown"}') == 1
    receiver = f"alertmanager:{alertmanager.removeprefix('http://')}"
    assert (metric_value(metrics, f'bcd_alert_notifications_total{{receiver="{receiver}",result="success"}}') or 0) >= 2

    estate.dorset.status = 200

    async def resolved() -> bool:
        now = time.time()
        return all(parse_time(a["endsAt"]) <= now for a in await am_alerts(alertmanager, "BcdSiteDown")
                   if site_down_payroll_dorset(a))

    await poll(resolved)
    await daemon.wait_log(lambda e: e.get("event") == "alert_resolved" and e.get("site") == "dorset")
    assert metric_value(await daemon.metrics(), 'bcd_alerts_firing{alertname="BcdSiteDown"}') == 0
    assert (metric_value(await daemon.metrics(),
                         f'bcd_alert_notifications_total{{receiver="{receiver}",result="failure"}}')) == 0


# -- a real webhook receiver ------------------------------------------------------------------------------


@dataclass
class WebhookReceiver:
    """Checks X-Bcd-Signature on every request; answers 503 to the first one (bcd must retry)."""

    secret: bytes
    requests: int = 0
    bad_signatures: int = 0
    notifications: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        expected = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(request.headers.get("X-Bcd-Signature", ""), expected):
            self.bad_signatures += 1
            return web.Response(status=401, text="bad signature")
        if self.requests == 1:
            return web.Response(status=503, text="warming up")
        self.notifications.append(json.loads(body))
        self.changed.set()
        return web.Response(status=204)

    async def wait_for(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                found = next((n for n in self.notifications if predicate(n)), None)
                if found is not None:
                    return found
                self.changed.clear()
                await self.changed.wait()


async def test_webhook_gets_signed_firing_then_resolved(estate: Estate, daemons: Daemons) -> None:
    receiver = WebhookReceiver(SECRET.encode())
    app = web.Application()
    app.router.add_post("/bcd", receiver.handle)
    async with serve_http(app) as base:
        daemon = await estate.daemon(
            daemons,
            f'  webhooks: [{{url: "{base}/bcd", secret_file: webhook_secret, attempts: 4}}]\n'
        )
        estate.dorset.status = 503

        def about_dorset(status: str) -> Any:
            return lambda n: n["status"] == status and any(site_down_payroll_dorset(a) for a in n["alerts"])

        firing = await receiver.wait_for(about_dorset("firing"))
        (alert,) = [a for a in firing["alerts"] if site_down_payroll_dorset(a)]
        assert alert["status"] == "firing" and alert["labels"]["owner"] == "dorset-cc"
        assert firing["instance"] == "test-bcd"
        estate.dorset.status = 200
        resolved = await receiver.wait_for(about_dorset("resolved"))
        (gone,) = [a for a in resolved["alerts"] if site_down_payroll_dorset(a)]
        assert gone["labels"] == alert["labels"] and gone["startsAt"] == alert["startsAt"]
        assert parse_time(gone["endsAt"]) <= time.time()
        assert receiver.notifications.index(firing) < receiver.notifications.index(resolved)
        assert receiver.bad_signatures == 0
        assert receiver.requests >= 3  # the first answer was 503: it was retried
        receiver_label = f"webhook:{base.removeprefix('http://')}"
        metrics = await daemon.metrics()
        assert metric_value(metrics, f'bcd_alert_notifications_total{{receiver="{receiver_label}",result="success"}}') == 2
        assert metric_value(metrics, f'bcd_alert_notifications_total{{receiver="{receiver_label}",result="failure"}}') == 0
        await daemon.stop()


# -- receivers that are down --------------------------------------------------------------------------------


async def test_receivers_down_or_silent_never_stop_the_daemon(estate: Estate, daemons: Daemons) -> None:
    closed = free_port()  # nothing listens there
    async with silent_server() as silent:
        daemon = await estate.daemon(
            daemons,
            f'  alertmanager: {{urls: ["http://127.0.0.1:{closed}"], resend: 300ms, attempts: 2, timeout: 300ms}}\n'
            f'  webhooks: [{{url: "http://127.0.0.1:{silent.port}/hook", timeout: 300ms, attempts: 2}}]\n'
        )
        estate.dorset.status = 503
        await daemon.wait_until(lambda: site_is(daemon, "payroll", "dorset", "down"))
        am_failures = f'bcd_alert_notifications_total{{receiver="alertmanager:127.0.0.1:{closed}",result="failure"}}'
        hook_failures = f'bcd_alert_notifications_total{{receiver="webhook:127.0.0.1:{silent.port}",result="failure"}}'

        async def both_failed() -> bool:
            metrics = await daemon.metrics()
            return (metric_value(metrics, am_failures) or 0) >= 2 and (metric_value(metrics, hook_failures) or 0) >= 1

        await daemon.wait_until(both_failed)
        assert silent.accepted >= 2  # the webhook was tried twice, each attempt cut off by its deadline
        status, _ = await daemon.get("/healthz")
        assert status == 200
        metrics = await daemon.metrics()
        assert metric_value(metrics, 'bcd_alerts_firing{alertname="BcdSiteDown"}') == 1
        assert (metric_value(metrics, am_failures.replace("failure", "success")) or 0) == 0
        log = await daemon.wait_log(lambda e: e.get("event") == "alert_delivery_failed")
        assert log["receiver"] in (f"alertmanager:127.0.0.1:{closed}", f"webhook:127.0.0.1:{silent.port}")
        estate.dorset.status = 200  # the daemon keeps probing and deciding meanwhile
        await daemon.wait_until(lambda: site_is(daemon, "payroll", "dorset", "up"))
        loop = asyncio.get_running_loop()
        began = loop.time()
        assert await daemon.stop() == 0
        assert loop.time() - began < 5.0


# -- resend, and a receiver added by a reload --------------------------------------------------------------


async def test_firing_alerts_are_resent_with_a_moving_ends_at(estate: Estate, daemons: Daemons) -> None:
    async with Recorder(statuses=(200,)) as fake_am, Recorder(statuses=(200,)) as hook:
        daemon = await estate.daemon(daemons, f'  alertmanager: {{urls: ["{fake_am.url("")}"], resend: 200ms}}\n')
        estate.dorset.status = 503

        def posts_with_alert() -> list[dict[str, Any]]:
            found = []
            for request in fake_am.to("/api/v2/alerts"):
                found.extend(a for a in request.json() if site_down_payroll_dorset(a))
            return found

        async def resent() -> bool:
            return len(posts_with_alert()) >= 5

        await poll(resent, every=0.05)
        posted = posts_with_alert()
        ends = [parse_time(a["endsAt"]) for a in posted]
        assert ends == sorted(ends) and len(set(ends)) == len(ends)  # strictly moving forward
        assert len({a["startsAt"] for a in posted}) == 1  # one alert, one start
        gaps = [later - earlier for earlier, later in itertools.pairwise(ends)]
        assert statistics.median(gaps) < 1.0, gaps  # about every resend (200 ms), with room for a busy machine
        assert -1.0 < ends[-1] - time.time() <= 0.8 + 0.05  # endsAt = post time + 4 x resend
        assert all(r.headers["Content-Type"] == "application/json" for r in fake_am.requests)

        # a webhook added by a reload hears what already fires
        estate.write_config(
            f'  alertmanager: {{urls: ["{fake_am.url("")}"], resend: 200ms}}\n'
            f'  webhooks: [{{url: "{hook.url("/new")}"}}]\n'
        )
        daemon.send(signal.SIGHUP)
        (request,) = await hook.wait_for(1, "/new")
        document = request.json()
        assert document["status"] == "firing"
        assert any(site_down_payroll_dorset(a) for a in document["alerts"])
        assert "X-Bcd-Signature" not in request.headers  # no secret_file: unsigned
        await daemon.stop()


# -- the edge's small helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "url", "label"),
    [
        ("alertmanager", "http://127.0.0.1:9093", "alertmanager:127.0.0.1:9093"),
        ("webhook", "https://hooks.example/bcd/T0K3N", "webhook:hooks.example:443"),  # never the path
        ("webhook", "http://[::1]/x", "webhook:[::1]:80"),
    ],
)
def test_receiver_label_is_kind_host_port(kind: str, url: str, label: str) -> None:
    assert receiver_label(kind, url) == label


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"status":"firing"}'
    assert signature(b"key", body) == "sha256=" + hmac.new(b"key", body, hashlib.sha256).hexdigest()
