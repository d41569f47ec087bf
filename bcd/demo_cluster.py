"""`bcd demo --cluster`: three bcd instances (dorset, hampshire, and a witness that votes but executes nothing,
`cluster.executor: false`) and an embedded three-member etcd on loopback, watching `payroll` in dorset (active)
and hampshire, and a quorum decision told as it happens.

The story: after `fail_after` seconds the link from hampshire to dorset breaks (dorset's payroll answers 503
to the hampshire vantage only): hampshire's bcd sees dorset down, the two others do not, so there is no quorum
and nothing moves (`blocked`, `no_quorum`). After twice that, dorset's payroll stops answering everyone: three
of three vantages see it down, hampshire's instance (the target site's) takes the lock and runs the failover
while the other two say they wait for it; all three agree on the new active site.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from bcd import config as config_module
from bcd import logging as bcd_logging
from bcd.app import Daemon
from bcd.coordination.etcd import EtcdClient, EtcdError
from bcd.events import RunFinished, RunStarted, ServiceStatusChanged
from bcd.state_dir import StateDirError
from bcd.web.listen import ListenError

VANTAGES = ("dorset", "hampshire", "witness")
FIRST_PORT = 9847  # the instances listen on 9847, 9848, 9849 (BCD_DEMO_PORTS="p1,p2,p3" to change)
STORY = frozenset({"service_status", "run_started", "run_finished", "active_changed"})


def free_port() -> int:
    """A loopback TCP port reserved for whoever binds it next with SO_REUSEADDR (etcd, aiohttp, bcd's listener
    all do): a connection to it is closed from its side first, leaving it in TIME_WAIT for a minute, and the
    kernel hands no port in TIME_WAIT to bind(0) or to an outgoing connection. A port merely bound and
    released could be taken by any of those before its user binds it (a race the demo's test lost)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = listener.getsockname()
        with socket.create_connection(address) as client:
            accepted, _ = listener.accept()
            accepted.close()  # closed first: the TIME_WAIT is on the reserved port's side
            client.recv(1)  # its FIN arrived: the accepted side is in TIME_WAIT, not FIN_WAIT
    port: int = address[1]
    return port


class EmbeddedEtcd:
    """Three etcd members on free loopback ports (fast elections), stopped with SIGKILL (SIGTERM on the leader
    waits seconds to hand leadership over, which a demo does not need)."""

    def __init__(self, base: Path, etcd: str) -> None:
        self.base = base
        self.etcd = etcd
        self.members = [(f"m{i}", free_port(), free_port()) for i in range(3)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def endpoints(self) -> list[str]:
        return [f"http://127.0.0.1:{client}" for _, client, _ in self.members]

    def spawn(self) -> None:
        initial = ",".join(f"{name}=http://127.0.0.1:{peer}" for name, _, peer in self.members)
        for name, client_port, peer in self.members:
            with (self.base / f"{name}.log").open("ab") as out:
                self.processes.append(subprocess.Popen([
                    self.etcd, "--name", name, "--data-dir", str(self.base / name),
                    "--listen-client-urls", f"http://127.0.0.1:{client_port}",
                    "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--heartbeat-interval", "10", "--election-timeout", "100", "--log-outputs", "stderr",
                ], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))  # Ctrl-C reaches bcd only: etcd outlives the instances' goodbyes

    async def wait_ready(self, limit: float = 15.0) -> None:
        """Return once a write succeeds (a leader is elected); TimeoutError after `limit` seconds."""
        async with EtcdClient(self.endpoints, request_timeout=0.5, deadline=1.0) as client, \
                asyncio.timeout(limit):
            while True:
                try:
                    await client.put("/demo/ready", b"1")
                    return
                except EtcdError:
                    await asyncio.sleep(0.05)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()


class Payroll:
    """payroll's health endpoints in dorset and hampshire; each answers 503 to the vantages in `down_for`
    (the probes name their vantage in the User-Agent), or to everyone once `down`."""

    def __init__(self) -> None:
        self.ports = {"dorset": free_port(), "hampshire": free_port()}
        self.down_for: dict[str, set[str]] = {site: set() for site in self.ports}
        self.down: set[str] = set()
        self.switches: list[str] = []
        self.switch_port = free_port()
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        for site, port in self.ports.items():
            await self._serve(port, self._health(site), "/health", "GET")
        await self._serve(self.switch_port, self._switch, "/switch", "POST")

    async def _serve(self, port: int, handler: Any, path: str, method: str) -> None:
        app = web.Application()
        app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)

    def _health(self, site: str) -> Any:
        async def health(request: web.Request) -> web.Response:
            vantage = request.headers.get("User-Agent", "").partition("(vantage ")[2].rstrip(")")
            if site in self.down or vantage in self.down_for[site]:
                return web.Response(status=503, text="DOWN\n")
            return web.Response(text="UP\n")

        return health

    async def _switch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.switches.append(json.dumps(body))
        print(f"*** demo load balancer: payroll now served from {body.get('to')} "
              f"(fencing token {body.get('fence')}) ***", flush=True)
        return web.Response(status=204)

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


def demo_config(endpoints: list[str], payroll: Payroll) -> dict[str, Any]:
    return {
        "instance": "bcd-demo",
        "sites": {"dorset": {}, "hampshire": {}, "witness": {"description": "the third place: votes, never executes"}},
        "defaults": {"interval": "500ms", "timeout": "400ms", "rise": 2, "fall": 3},
        "services": {"payroll": {
            "description": "Payroll (shared by both councils)", "active": "dorset",
            "failover": {"runbook": "move", "mode": "auto", "cooldown": "10m"},
            "sites": {site: {"probes": [{"name": "health", "http": {"url": f"http://127.0.0.1:{port}/health"}}]}
                      for site, port in payroll.ports.items()},
        }},
        "runbooks": {"move": {"steps": [{"name": "switch load balancer", "http": {
            "url": f"http://127.0.0.1:{payroll.switch_port}/switch",
            "json": {"service": "{service}", "to": "{to_site}", "fence": "{fence_token}"}}}]}},
        "auth": {"anonymous_read": True},
        "cluster": {"name": "demo", "etcd": {"endpoints": endpoints}, "lease_ttl": "3s", "call_timeout": "500ms"},
    }


def demo_ports() -> list[int]:
    given = os.environ.get("BCD_DEMO_PORTS", "")
    ports = [int(port) for port in given.split(",") if port.strip()]
    return ports if len(ports) == len(VANTAGES) else [FIRST_PORT + index for index in range(len(VANTAGES))]


def _etcd_and_workdir() -> tuple[str | None, Path]:
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    return (etcd if Path(etcd).exists() else None), Path(tempfile.mkdtemp(prefix="bcd-demo-cluster-"))


async def run_cluster_demo(fail_after: float) -> int:
    etcd, base = _etcd_and_workdir()
    if etcd is None:
        print("bcd demo --cluster needs etcd (Debian: apt-get install etcd-server)")
        return 1
    bcd_logging.setup("warning")
    cluster = EmbeddedEtcd(base, etcd)
    payroll = Payroll()
    daemons = contextlib.AsyncExitStack()  # each daemon running, stopped on the way out
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    tasks: list[asyncio.Task[None]] = []
    try:
        cluster.spawn()
        await cluster.wait_ready()
        await payroll.start()
        config_path = base / "bcd.yaml"
        config_path.write_text(json.dumps(demo_config(cluster.endpoints, payroll), indent=2))
        ports = demo_ports()
        for vantage, port in zip(VANTAGES, ports, strict=True):
            overrides: dict[str, Any] = {"vantage": vantage, "state_dir": str(base / vantage),
                                         "server": {"listen": f"127.0.0.1:{port}"}}
            if vantage == "witness":  # it votes and runs nothing: it may have no route to the load balancer
                overrides["cluster"] = {**demo_config(cluster.endpoints, payroll)["cluster"], "executor": False}
            daemon = Daemon(str(config_path), config_module.load(config_path, overrides), overrides)
            await daemons.enter_async_context(daemon.running())
            tasks.append(loop.create_task(narrate(vantage, daemon)))
        print(banner(base, fail_after, ports), flush=True)
        tasks.append(loop.create_task(story(payroll, fail_after)))
        await stop.wait()
        return 0
    except (OSError, TimeoutError, config_module.ConfigError, StateDirError, ListenError) as exc:
        print(f"bcd demo --cluster: cannot start: {exc}")
        return 1
    finally:
        for task in tasks:
            task.cancel()
        await daemons.aclose()
        await payroll.stop()
        cluster.stop()


def banner(base: Path, fail_after: float, ports: list[int]) -> str:
    urls = "\n".join(f"  {vantage:<10} http://127.0.0.1:{port}/api/v1/services/payroll"
                     for vantage, port in zip(VANTAGES, ports, strict=True))
    return "\n".join([
        "", "bcd demo --cluster — three bcd instances and a three-member etcd on loopback", urls,
        f"  state      {base}",
        f"In {fail_after:g} s the link from hampshire to dorset breaks: no quorum, nothing moves.",
        f"In {2 * fail_after:g} s payroll in dorset stops answering everyone: hampshire's instance fails it over,",
        "the others wait for it (the witness votes but never runs a runbook: cluster.executor: false).",
        "Ctrl-C stops everything.", "",
    ])


async def story(payroll: Payroll, fail_after: float) -> None:
    await asyncio.sleep(fail_after)
    payroll.down_for["dorset"] = {"hampshire"}
    print("\n*** demo: the link from hampshire to dorset breaks (dorset answers 503 to hampshire only) ***\n",
          flush=True)
    await asyncio.sleep(fail_after)
    payroll.down.add("dorset")
    print("\n*** demo: payroll in dorset stops answering everyone ***\n", flush=True)


async def narrate(vantage: str, daemon: Daemon) -> None:
    """One line per status change, run and active-site change, prefixed with the instance's vantage."""
    async with daemon.bus.subscription(f"demo-{vantage}") as events:
        async for event in events:
            if event.kind not in STORY or event.service is None:
                continue
            data = event.data
            if isinstance(data, ServiceStatusChanged):
                guard = f" ({data.guard})" if data.guard else ""
                line = f"{data.to_status}{guard}: {event.reason}"
            elif isinstance(data, RunStarted):
                line = f"run {data.run_id} started ({data.trigger}): {event.reason}"
            elif isinstance(data, RunFinished):
                line = f"run {data.run_id} {data.result}: {event.reason}"
            else:
                line = f"active site now {event.site}: {event.reason}"
            print(f"[{vantage:<9}] {event.service}: {line}", flush=True)
