"""`bcd demo`: a simulated two-site estate on loopback, and the real daemon watching it.

The estate is read from the demo config itself: every `http` probe URL and `tcp` probe port in it is
served here. After `fail_after` seconds the active site of the first service stops answering, so the
operator sees degraded → down transitions (and, once runbooks are configured, a failover).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from bcd import config as config_module
from bcd import files
from bcd import logging as bcd_logging
from bcd.app import Daemon
from bcd.config import Config, ConfigError
from bcd.events import RunFinished
from bcd.probes.http import HttpSpec
from bcd.probes.tcp import TcpSpec

DEMO_CONFIG = files.path("demo")  # config/demo.yaml, shipped in the package (see bcd/files.py)
LOAD_BALANCER = ("127.0.0.1", 19100)  # the runbooks in demo.yaml call this simulated load balancer


@dataclass
class Endpoint:
    """One simulated listener; `healthy` is what the operator's story changes."""

    service: str
    site: str
    healthy: bool = True
    servers: list[asyncio.AbstractServer | web.AppRunner] = field(default_factory=list)


class Estate:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.balancer_calls: list[str] = []
        self._balancer: web.AppRunner | None = None

    async def start(self) -> None:
        self._balancer = await self._load_balancer(*LOAD_BALANCER)
        for service, site, probe in self.config.all_probes():
            endpoint = self.endpoints.setdefault((service, site), Endpoint(service, site))
            spec = probe.spec
            if isinstance(spec, HttpSpec):
                url = urlsplit(spec.url)
                endpoint.servers.append(await self._http(endpoint, url.hostname or "127.0.0.1", url.port or 80))
            elif isinstance(spec, TcpSpec):
                endpoint.servers.append(await self._tcp(endpoint, spec.host, spec.port))

    async def _http(self, endpoint: Endpoint, host: str, port: int) -> web.AppRunner:
        async def health(request: web.Request) -> web.Response:
            if endpoint.healthy:
                return web.Response(text=f"UP {endpoint.service}@{endpoint.site}\n")
            return web.Response(status=503, text="DOWN\n")

        app = web.Application()
        app.router.add_get("/health", health)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        return runner

    async def _load_balancer(self, host: str, port: int) -> web.AppRunner:
        async def pool(request: web.Request) -> web.Response:
            call = "/".join(request.match_info[k] for k in ("site", "service", "action"))
            self.balancer_calls.append(call)
            print(f"*** demo load balancer: {call} ***", flush=True)
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/lb/{site}/{service}/{action}", pool)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        return runner

    async def _tcp(self, endpoint: Endpoint, host: str, port: int) -> asyncio.AbstractServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if endpoint.healthy:
                    await asyncio.wait_for(reader.readline(), 1.0)
                    writer.write(b"PONG\n")
                    await writer.drain()
            except (TimeoutError, ConnectionError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, host, port, reuse_address=True)

    async def stop(self) -> None:
        if self._balancer is not None:
            await self._balancer.cleanup()
        for endpoint in self.endpoints.values():
            for server in endpoint.servers:
                if isinstance(server, web.AppRunner):
                    await server.cleanup()
                else:
                    server.close()


def banner(config: Config, state_dir: str, fail_after: float) -> str:
    listen = f"http://{config.server.listen}"
    victim = next(iter(config.services))
    active = config.services[victim].active
    return "\n".join([
        "",
        "bcd demo — a simulated two-site estate on loopback, watched by the real daemon",
        f"  status page  {listen}/",
        f"  status API   {listen}/api/v1/services",
        f"  metrics      {listen}/metrics",
        f"  readiness    {listen}/readyz",
        f"  CLI          .venv/bin/bcd status --url {listen}   (and: bcd runs, bcd run-show RUN)",
        "  operator     export BCD_TOKEN=demo-operator-token   (then e.g. bcd failback payroll --reason test)",
        f"  state        {state_dir}",
        f"In {fail_after:g} s the {active} site of {victim} will stop answering; bcd detects it and runs the",
        "failover runbook (mode auto). Ctrl-C stops everything.",
        "",
    ])


async def run_demo(fail_after: float, path: Path = DEMO_CONFIG, listen: str | None = None) -> int:
    state_dir = tempfile.mkdtemp(prefix="bcd-demo-")
    overrides: dict[str, Any] = {"state_dir": state_dir}
    if listen is not None:  # replaces demo.yaml's whole `server:` section, which holds only `listen`
        overrides["server"] = {"listen": listen}
    try:
        config = config_module.load(path, overrides)
    except ConfigError as exc:
        print(exc)
        return 2
    bcd_logging.setup("info")
    estate = Estate(config)
    try:
        await estate.start()
    except OSError as exc:
        print(f"bcd demo: cannot start the simulated estate: {exc}")
        await estate.stop()
        return 1
    print(banner(config, state_dir, fail_after), flush=True)
    victim = next(iter(config.services))
    daemon = Daemon(str(path), config, overrides)
    narrator = asyncio.get_running_loop().create_task(narrate(daemon, config))
    breaker = asyncio.get_running_loop().call_later(fail_after, _fail, estate, victim, config.services[victim].active)
    try:
        return await daemon.run()
    finally:
        breaker.cancel()
        narrator.cancel()
        await estate.stop()


async def narrate(daemon: Daemon, config: Config) -> None:
    """Tell the operator, in one line each, what the runbooks did and how fast."""
    async with daemon.bus.subscription("demo") as events:
        async for event in events:
            if not isinstance(event.data, RunFinished):
                continue
            stats = daemon.parts.runner.stats
            service = event.service or ""
            detection = stats.detection.get(service)
            total = stats.total.get(service)
            probe_interval = config.defaults.interval
            budget = probe_interval * config.defaults.fall
            timing = (f"; detection {detection:.1f}s, total {total:.1f}s (interval {probe_interval:g}s x fall "
                      f"{config.defaults.fall} = {budget:g}s)" if detection is not None and total is not None else "")
            print(f"\n*** demo: run {event.data.run_id} of {service}: {event.data.result}"
                  f" — {event.reason}{timing} ***\n", flush=True)


def _fail(estate: Estate, service: str, site: str) -> None:
    """The story's event: HTTP answers 503 and TCP listeners stop accepting."""
    endpoint = estate.endpoints[(service, site)]
    endpoint.healthy = False
    for server in endpoint.servers:
        if isinstance(server, asyncio.AbstractServer):
            server.close()
    print(f"\n*** demo: {service} in {site} stops answering now ***\n", flush=True)
