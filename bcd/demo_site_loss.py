"""`bcd demo --site-loss`: a twelve-service estate in three dependency levels (directory → databases →
applications) on loopback, watched by the real daemon, and the whole Dorset centre going dark.

The story: after `fail_after` seconds every dorset endpoint closes. Each service's dorset site goes down;
only the root cause (the directory) pages, its dependents' alerts carry `impacted_by` and are held. Every
service probed in dorset is down, so the site is declared lost, and the recovery plan `evacuate-dorset`
(`trigger: auto`) moves the services to hampshire group by group: the simulated load balancer prints each
move with its fencing token. At the end the demo prints the plan's total time and each service's.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import web

from bcd import config as config_module
from bcd import logging as bcd_logging
from bcd.app import Daemon
from bcd.demo_cluster import free_port
from bcd.events import Event, PlanFinished, PlanGroupStarted, PlanServiceMoved, PlanStarted, SiteLost
from bcd.plans.model import MoveState, PlanRun
from bcd.state_dir import StateDirError
from bcd.web.listen import ListenError

PLAN = "evacuate-dorset"
# service -> (what it depends on, its active site); the directory first, then databases, then applications
ESTATE: dict[str, tuple[list[str], str]] = {
    "directory": ([], "dorset"),
    "sql-finance": (["directory"], "dorset"),
    "sql-care": (["directory"], "dorset"),
    "postgres-gis": (["directory"], "dorset"),
    "payroll": (["sql-finance", "directory"], "dorset"),
    "finance": (["sql-finance"], "dorset"),
    "social-care": (["sql-care", "directory"], "dorset"),
    "housing": (["sql-care"], "dorset"),
    "planning": (["postgres-gis"], "dorset"),
    "gis-maps": (["postgres-gis"], "dorset"),
    "intranet": (["sql-finance", "postgres-gis"], "dorset"),
    "library": (["postgres-gis"], "hampshire"),  # already in hampshire: the plan skips it
}
SLOW = frozenset({"directory", "sql-finance", "sql-care", "postgres-gis"})  # infrastructure takes longer to move


class Centres:
    """The two computer centres (one HTTP listener each, answering every service's /health/SERVICE), the
    simulated load balancer the runbooks call, and the pager (the alerts webhook)."""

    def __init__(self) -> None:
        self.ports = {"dorset": free_port(), "hampshire": free_port()}
        self.balancer_port = free_port()
        self.pager_port = free_port()
        self.pages: list[str] = []  # one line per firing alert received
        self._runners: dict[str, web.AppRunner] = {}

    async def start(self) -> None:
        for site, port in self.ports.items():
            self._runners[site] = await self._serve(port, "GET", "/health/{service}", self._health(site))
        self._runners["balancer"] = await self._serve(self.balancer_port, "POST", "/switch", self._switch)
        self._runners["pager"] = await self._serve(self.pager_port, "POST", "/alerts", self._page)

    @staticmethod
    async def _serve(port: int, method: str, path: str, handler: Any) -> web.AppRunner:
        app = web.Application()
        app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    @staticmethod
    def _health(site: str) -> Any:
        async def health(request: web.Request) -> web.Response:
            return web.Response(text=f"UP {request.match_info['service']}@{site}\n")

        return health

    async def _switch(self, request: web.Request) -> web.Response:
        body = await request.json()
        print(f"*** demo load balancer: {body.get('service')} now served from {body.get('to')} (fencing token "
              f"{body.get('fence')}, plan {body.get('plan')} run {body.get('plan_run')}) ***", flush=True)
        return web.Response(status=204)

    async def _page(self, request: web.Request) -> web.Response:
        body = await request.json()
        for alert in body.get("alerts", []):
            labels, status = alert.get("labels", {}), alert.get("status", body.get("status"))
            where = "@".join(part for part in (labels.get("service"), labels.get("site")) if part)
            line = f"{status} {labels.get('alertname')} {where}: {alert.get('annotations', {}).get('summary', '')}"
            if status == "firing":
                self.pages.append(line)
            print(f"*** demo pager: {line} ***", flush=True)
        return web.Response(status=204)

    async def go_dark(self, site: str) -> None:
        """Every endpoint of `site` closes: its probes see connections refused."""
        runner = self._runners.pop(site, None)
        if runner is not None:
            await runner.cleanup()

    async def stop(self) -> None:
        for runner in self._runners.values():
            await runner.cleanup()


def demo_config(centres: Centres, state_dir: str, listen: str) -> dict[str, Any]:
    def move(seconds: str) -> dict[str, Any]:
        return {"steps": [
            {"name": "prepare", "sleep": {"duration": seconds}},
            {"name": "switch load balancer", "timeout": "5s", "http": {
                "method": "POST", "url": f"http://127.0.0.1:{centres.balancer_port}/switch", "expect_status": [204],
                "json": {"service": "{service}", "to": "{to_site}", "fence": "{fence_token}", "plan": "{plan}",
                         "plan_run": "{plan_run}"}}},
        ]}

    def service(name: str, needs: list[str], active: str) -> dict[str, Any]:
        return {"active": active, "depends_on": needs,
                "failover": {"runbook": "move-infra" if name in SLOW else "move-app", "mode": "manual",
                             "cooldown": "0s"},
                "sites": {site: {"probes": [{"name": "health", **probing(name), "http": {
                    "url": f"http://127.0.0.1:{port}/health/{name}"}}]} for site, port in centres.ports.items()}}

    def probing(name: str) -> dict[str, str]:
        # the directory is probed most often, so it is seen down first: its dependents' alerts name it
        return {"interval": "250ms", "timeout": "200ms"} if name == "directory" else {}

    return {
        "instance": "bcd-demo", "vantage": "dorset", "state_dir": state_dir, "server": {"listen": listen},
        "sites": {"dorset": {"description": "County Hall, Dorchester (simulated)"},
                  "hampshire": {"description": "Winchester (simulated)"}},
        "defaults": {"interval": "1s", "timeout": "400ms", "rise": 1, "fall": 2},
        "auth": {"anonymous_read": True},
        "alerts": {"webhooks": [{"url": f"http://127.0.0.1:{centres.pager_port}/alerts", "timeout": "2s"}]},
        "runbooks": {"move-infra": move("2s"), "move-app": move("1s")},
        "services": {name: service(name, needs, active) for name, (needs, active) in ESTATE.items()},
        "plans": {PLAN: {"description": "Leave Dorset: every service active there moves to Hampshire",
                         "from": "dorset", "to": "hampshire", "services": "all", "parallel": 4,
                         "on_service_failure": "continue", "trigger": "auto", "objective": "15m"}},
    }


def banner(listen: str, state_dir: str, fail_after: float) -> str:
    return "\n".join([
        "",
        "bcd demo --site-loss — two computer centres, twelve services in three levels (directory -> databases",
        "-> applications) on loopback, watched by the real daemon",
        f"  status page  http://{listen}/",
        f"  the plan     .venv/bin/bcd plan show {PLAN} --url http://{listen}",
        f"  state        {state_dir}",
        f"In {fail_after:g} s the whole Dorset centre goes dark. The directory (the root cause) pages; the site is",
        f"declared lost and the recovery plan {PLAN} (trigger: auto) moves everything to Hampshire, group by",
        "group. Ctrl-C stops everything.",
        "",
    ])


def summary(run: PlanRun, pages: list[str]) -> str:
    """The plan run's total time and each service's (from its journaled record), and the pages sent."""
    total = (run.ended or run.started) - run.started
    objective = f" (objective {run.objective:g}s)" if run.objective is not None else ""
    lines = [f"*** demo: plan {run.plan} run {run.id} {run.state} in {total:.1f}s{objective}; each service:"]
    for move in run.moves:
        took = f"{move.ended - move.started:5.1f}s" if move.started is not None and move.ended is not None else "    - "
        group = f"group {move.group}" if move.group else "       "
        lines.append(f"      {group}  {move.service:<13} {took}  {move.state}" + (
            f": {move.reason}" if move.state not in (MoveState.MOVED,) else ""))
    lines.append(f"*** demo: pages sent ({len(pages)}), one root cause and the lost site:")
    lines.extend(f"      {page}" for page in pages)
    return "\n".join(lines)


async def narrate(daemon: Daemon, centres: Centres) -> None:
    """One line per step of the story: the site lost, the plan's groups and moves, then the times."""
    async with daemon.bus.subscription("demo") as events:
        async for event in events:
            line = _tell(event)
            if isinstance(event.data, PlanFinished):
                run = daemon.view.plan_run(event.data.plan_run)
                line = summary(run, centres.pages) if run is not None else line
            if line:
                print(line, flush=True)


def _tell(event: Event) -> str:
    data = event.data
    if isinstance(data, SiteLost):
        return f"\n*** demo: site {event.site} lost ({len(data.services)} services down there) ***"
    if isinstance(data, PlanStarted):
        return f"*** demo: plan {data.plan} run {data.plan_run} started: {event.reason} ***"
    if isinstance(data, PlanGroupStarted):
        return f"*** demo: group {data.group}: {', '.join(data.services)} ***"
    if isinstance(data, PlanServiceMoved) and event.service is not None:
        if data.state == "moving":
            return f"    {event.service}: moving (run {data.run_id})" if data.run_id is not None else ""
        return f"    {event.service}: {data.state}" + (f" ({event.reason})" if data.state != "moved" else "")
    if isinstance(data, PlanFinished):
        return f"*** demo: {event.reason} ***"
    return ""


async def story(centres: Centres, fail_after: float) -> None:
    await asyncio.sleep(fail_after)
    await centres.go_dark("dorset")
    print("\n*** demo: the Dorset centre goes dark (power lost): every dorset endpoint closes now ***\n", flush=True)


async def run_site_loss_demo(fail_after: float, listen: str | None = None) -> int:
    state_dir = tempfile.mkdtemp(prefix="bcd-demo-site-loss-")
    listen = listen or "127.0.0.1:9847"
    bcd_logging.setup("warning")
    centres = Centres()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    try:
        await centres.start()
        path = Path(state_dir) / "bcd.yaml"
        path.write_text(json.dumps(demo_config(centres, str(Path(state_dir) / "state"), listen), indent=2))
        daemon = Daemon(str(path), config_module.load(path))
        tasks.append(loop.create_task(narrate(daemon, centres)))
        print(banner(listen, state_dir, fail_after), flush=True)
        tasks.append(loop.create_task(story(centres, fail_after)))
        return await daemon.run()
    except (OSError, config_module.ConfigError, StateDirError, ListenError) as exc:
        print(f"bcd demo --site-loss: cannot start: {exc}")
        return 1
    finally:
        for task in tasks:
            task.cancel()
        await centres.stop()
