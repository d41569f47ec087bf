"""`bcd demo --site-loss`: a dozen simulated services in three dependency levels (directory and DNS, then the
databases, then the applications), all active in Dorset, and the real daemon watching them. After
`fail_after` seconds the whole Dorset centre goes dark: the site is declared lost, the evacuation plan
(`trigger: auto`) moves every service to Hampshire group by group through the simulated load balancer (which
prints each move with its fencing token), and the demo prints the plan's total time and each service's.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from bcd import config as config_module
from bcd import logging as bcd_logging
from bcd.app import Daemon
from bcd.config import ConfigError
from bcd.demo import LOAD_BALANCER, Estate
from bcd.events import EventKind, PlanFinished, PlanGroupStarted

FIRST_PORT = 19300
LEVELS = {  # service -> what it depends on
    "directory": [], "dns": [],
    "sql": ["directory", "dns"], "files": ["directory"], "mail-store": ["dns"],
    "payroll": ["sql", "directory"], "social-care": ["sql"], "library": ["sql", "files"],
    "intranet": ["files", "dns"], "email": ["mail-store", "directory"], "planning": ["sql", "files"],
    "fire-dispatch": ["sql", "dns"],
}
LB = f"http://{LOAD_BALANCER[0]}:{LOAD_BALANCER[1]}"


def config_text(state_dir: str, listen: str) -> str:
    lines = [
        "instance: bcd-demo-site-loss", "vantage: hampshire", f'server: {{listen: "{listen}"}}',
        f"state_dir: {state_dir}",
        'sites: {dorset: {description: "County Hall (simulated)"}, hampshire: {description: "Winchester '
        '(simulated)"}}',
        "defaults: {interval: 1s, timeout: 500ms, rise: 1, fall: 3}",
        "auth: {anonymous_read: true, tokens: [{name: demo-operator, role: operator, sha256: "
        "61112491d046c3f6f8ab801f170d9b2d0c734a17ceff60dee92123fb507cfc3f}]}",
        "runbooks:",
        "  evacuate:",
        "    steps:",
        f'      - {{name: enable new pool, http: {{url: "{LB}/lb/{{to_site}}/{{service}}/enable?fence={{fence_token}}'
        '&plan={plan}&plan_run={plan_run}", expect_status: [200, 204]}}',
        "      - {name: settle, sleep: {duration: 1s}}",
        "      - {name: verify, wait_healthy: {site: '{to_site}', within: 30s}}",
        "services:",
    ]
    port = FIRST_PORT
    for name, needs in LEVELS.items():
        sites = []
        for site in ("dorset", "hampshire"):
            sites.append(f'{site}: {{probes: [{{name: health, http: {{url: "http://127.0.0.1:{port}/health"}}}}]}}')
            port += 1
        lines.append(f"  {name}: {{active: dorset, depends_on: [{', '.join(needs)}], failover: {{runbook: evacuate, "
                     f"mode: manual, cooldown: 0s}}, sites: {{{', '.join(sites)}}}}}")
    lines += ["plans:", "  evacuate-dorset:", "    description: Leave Dorset for Hampshire",
              "    from: dorset", "    to: hampshire", "    parallel: 3", "    trigger: auto", "    objective: 2m"]
    return "\n".join(lines) + "\n"


async def run_site_loss_demo(fail_after: float, listen: str | None = None) -> int:
    state_dir = tempfile.mkdtemp(prefix="bcd-demo-site-loss-")
    path = Path(state_dir) / "bcd.yaml"
    path.write_text(config_text(state_dir, listen or "127.0.0.1:9847"))
    try:
        config = config_module.load(path)
    except ConfigError as exc:
        print(exc)
        return 2
    bcd_logging.setup("warning")
    estate = Estate(config)
    try:
        await estate.start()
    except OSError as exc:
        print(f"bcd demo: cannot start the simulated estate: {exc}")
        await estate.stop()
        return 1
    print(f"\nbcd demo --site-loss: {len(LEVELS)} services in Dorset, in three dependency levels; status page "
          f"http://{config.server.listen}/\nIn {fail_after:g} s the whole Dorset centre goes dark. Ctrl-C stops.\n",
          flush=True)
    daemon = Daemon(str(path), config)
    narrator = asyncio.get_running_loop().create_task(narrate(daemon))
    breaker = asyncio.get_running_loop().call_later(fail_after, _dark, estate)
    try:
        return await daemon.run()
    finally:
        breaker.cancel()
        narrator.cancel()
        await estate.stop()


def _dark(estate: Estate) -> None:
    for (_, site), endpoint in estate.endpoints.items():
        if site == "dorset":
            endpoint.healthy = False
    print("\n*** demo: the Dorset centre goes dark now ***\n", flush=True)


async def narrate(daemon: Daemon) -> None:
    """One line for each step of the story: the site lost, each group, each service moved, the plan's end."""
    async with daemon.bus.subscription("demo") as events:
        async for event in events:
            data = event.data
            if event.kind is EventKind.SITE_LOST:
                print(f"*** demo: {event.reason} ***", flush=True)
            elif event.kind is EventKind.PLAN_GROUP_STARTED:
                assert isinstance(data, PlanGroupStarted)
                print(f"*** demo: plan run {data.plan_run}: group {data.group}: {', '.join(data.services)} ***",
                      flush=True)
            elif isinstance(data, PlanFinished):
                report(daemon, data.plan_run)


def report(daemon: Daemon, run_id: int) -> None:
    run = daemon.view.plan_run(run_id)
    if run is None:
        return
    total = (run.ended or run.started) - run.started
    print(f"\n*** demo: plan run {run.id} of {run.plan} {run.state} in {total:.1f} s "
          f"(objective {run.objective or 0:g} s) ***", flush=True)
    for move in run.moves:
        took = f"{move.ended - move.started:.1f} s" if move.started and move.ended else "-"
        print(f"    group {move.group}  {move.service:<14} {move.state:<8} {took:>7}  {move.reason}", flush=True)
