"""bcd's own shortages are not its targets' failures. A daemon with a low open-files limit, flooded with idle
and half-sent connections, refuses the excess cleanly (503), closes the idle ones after server.idle_timeout,
keeps answering, and no site goes down; a probe run that finds no free file descriptor is counted as bcd's
internal error and moves no health state."""

from __future__ import annotations

import asyncio
import re
import resource
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from aiohttp import web

from bcd.web.limits import connection_cap
from tests.helpers.api import CONFIG, VIEWER, Api, api_daemon, sha
from tests.helpers.api import OPERATOR as OPERATOR_TOKEN
from tests.helpers.daemon import free_port, running, write_config
from tests.helpers.runner_kit import eventually
from tests.helpers.targets import HttpTarget, two_sites


@asynccontextmanager
async def limited(tmp_path: Path, config: str, open_files: int, **targets: str) -> AsyncIterator[Api]:
    """The daemon with a hard limit on open files (it lifts its soft limit to the hard one by itself), started."""
    port = free_port()
    path = write_config(tmp_path / "bcd.yaml", config.format(
        state=tmp_path / "state", port=port, operator=sha(OPERATOR_TOKEN), viewer=sha(VIEWER), **targets))
    daemon = Api(path, port)
    daemon.preexec_fn = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))
    async with running(daemon, ready=False):
        yield daemon
        assert await daemon.stop() == 0


def counter(metrics: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", metrics, re.MULTILINE))


async def hold(port: int, head: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    return reader, writer


async def test_a_flood_of_idle_connections_is_refused_cleanly_and_no_site_goes_down(tmp_path: Path) -> None:
    config = CONFIG.replace('server: {{listen: "127.0.0.1:{port}"}}',
                            'server: {{listen: "127.0.0.1:{port}", idle_timeout: 3s}}')
    # what broke it: 320 idle connections against an open-files limit of 300
    async with two_sites() as (dorset, hampshire), \
            limited(tmp_path, config, 300, dorset=dorset.url, hampshire=hampshire.url) as daemon:
        await daemon.wait_ready()
        capped = await daemon.wait_log(lambda e: e.get("event") == "http_connections_capped")
        cap = capped["cap"]
        assert cap == connection_cap(256, 300) < 256
        # half the flood sends nothing, half a request head that never ends (slowloris)
        flood = [await hold(daemon.port, b"" if i % 2 else b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\n")
                 for i in range(320)]
        status, content_type, _ = await daemon.call("GET", "/api/v1/services", token=VIEWER)
        assert (status, content_type) == (503, "application/problem+json")  # full: refused cleanly, at once
        answers = await asyncio.gather(*(asyncio.wait_for(reader.read(), 10) for reader, _ in flood))
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        closed_idle = [a for a in answers if a == b""]  # the server's idle timer closed them without a word
        assert len(refused) >= 320 - cap and len(refused) + len(closed_idle) == len(flood)  # none waited 10 s
        assert b"application/problem+json" in refused[0] and b"server.max_connections" in refused[0]
        for _, writer in flood:
            writer.close()
        status, _, _ = await daemon.call("GET", "/api/v1/services", token=VIEWER)
        assert status == 200
        metrics = await daemon.metrics_with(VIEWER)
        assert counter(metrics, "bcd_http_connections_refused_total") >= 320 - cap
        assert counter(metrics, "bcd_http_connections_limit") == cap
        _, _, service = await daemon.call("GET", "/api/v1/services/payroll", token=VIEWER)
        assert {site["state"] for site in service["sites"].values()} == {"up"}
        assert not [e for e in daemon.log_lines if e.get("event") == "site_transition" and e.get("to_state") != "up"]
        assert not [e for e in daemon.log_lines if e.get("level") == "error"]  # no accept() without a descriptor


class SlowTarget:
    """GET /health answered after `delay` seconds: each probe in flight holds a socket that long."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> SlowTarget:
        async def health(request: web.Request) -> web.Response:
            await asyncio.sleep(self.delay)
            return web.Response(text="UP")

        app = web.Application()
        app.router.add_get("/health", health)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site.port}/health"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


PROBES = 250
MANY_PROBES = """
state_dir: {{state}}
server: {{{{listen: "127.0.0.1:{{port}}"}}}}
sites: {{{{dorset: {{{{}}}}, hampshire: {{{{}}}}}}}}
defaults: {{{{interval: 2s, timeout: 1900ms, rise: 1, fall: 1}}}}
auth:
  tokens:
    - {{{{name: alice, role: operator, sha256: {{operator}}}}}}
    - {{{{name: grafana, role: viewer, sha256: {{viewer}}}}}}
services:
  payroll:
    active: dorset
    sites:
      dorset: {{{{probes: [{probes}]}}}}
      hampshire: {{{{probes: [{{{{name: health, http: {{{{url: "{{fast}}"}}}}}}}}]}}}}
""".format(probes=", ".join(f'{{{{name: p{i}, http: {{{{url: "{{slow}}"}}}}}}}}' for i in range(PROBES)))


async def test_probes_without_a_file_descriptor_are_internal_errors_not_a_down_site(tmp_path: Path) -> None:
    slow, fast = await SlowTarget(1.0).start(), await HttpTarget().start()
    async with AsyncExitStack() as stack:
        stack.push_async_callback(slow.stop)
        stack.push_async_callback(fast.stop)
        # 250 probes every 2 s, each holding a socket for 1 s: over 100 in flight, more than 100 files allow
        daemon = await stack.enter_async_context(limited(tmp_path, MANY_PROBES, 100, slow=slow.url, fast=fast.url))
        line = await daemon.wait_log(lambda e: e.get("event") == "probe_internal_error", timeout=20)
        assert line["reason"] == "EMFILE" and "bcd could not run the check" in line["detail"]
        rounds = fast.requests + 2  # two more rounds of probes (hampshire's one probe runs once a round)
        await eventually(lambda: fast.requests >= rounds, 20, "two more rounds of probes")
        metrics = await daemon.metrics_with(VIEWER)
        assert counter(metrics, 'bcd_probe_internal_errors_total{reason="EMFILE"}') > 0
        _, _, service = await daemon.call("GET", "/api/v1/services/payroll", token=VIEWER)
        assert service["sites"]["dorset"]["state"] in ("up", "unknown"), service["sites"]["dorset"]
        assert not [e for e in daemon.log_lines if e.get("event") == "site_transition"
                    and e.get("to_state") in ("down", "degraded")]


async def test_a_body_that_does_not_arrive_in_time_gets_408(tmp_path: Path) -> None:
    config = CONFIG.replace('server: {{listen: "127.0.0.1:{port}"}}',
                            'server: {{listen: "127.0.0.1:{port}", request_timeout: 1s}}')
    async with api_daemon(tmp_path, config) as (daemon, _, _):
        head = (f"POST /api/v1/services/payroll/ack HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {OPERATOR_TOKEN}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 100\r\n\r\n{{").encode()
        reader, writer = await hold(daemon.port, head)  # and the other 99 bytes never come
        answer = await asyncio.wait_for(reader.read(1000), 5)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408") and b"server.request_timeout" in answer
        status, _, _ = await daemon.call("GET", "/api/v1/services", token=VIEWER)
        assert status == 200
