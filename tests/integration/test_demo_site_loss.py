"""`bcd demo --site-loss` tells a whole site lost: the Dorset centre goes dark, only the root cause (the
directory) pages, the site is declared lost, the plan `evacuate-dorset` (trigger: auto) moves the services group
by group (directory, then the databases, then the applications; the load balancer sees each move with its
fencing token), the demo prints the plan's total time and each service's, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

from bcd.demo_site_loss import ESTATE
from tests.helpers.daemon import free_port

MOVED = [name for name, (_, active) in ESTATE.items() if active == "dorset"]


async def run_demo() -> tuple[str, int | None]:
    """The demo's whole output up to the pages it printed after the plan, then stopped with SIGINT."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bcd", "demo", "--site-loss", "--fail-after", "2", "--listen",
        f"127.0.0.1:{free_port()}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any(line.startswith("*** demo: pages sent") for line in seen):
                line = (await process.stdout.readline()).decode()
                assert line, "the demo ended early:\n" + "".join(seen)
                seen.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            rest, _ = await process.communicate()
    return "".join(seen) + rest.decode(), process.returncode


async def test_the_site_loss_demo_pages_once_and_evacuates_in_groups() -> None:
    text, returncode = await run_demo()
    groups = re.findall(r"^\*\*\* demo: group (\d): (.*) \*\*\*$", text, re.MULTILINE)
    assert groups == [("1", "directory"), ("2", "postgres-gis, sql-care, sql-finance"),
                      ("3", "finance, gis-maps, housing, intranet, payroll, planning, social-care")], text
    switched = re.findall(r"^\*\*\* demo load balancer: (\S+) now served from hampshire \(fencing token (\d+), "
                          r"plan evacuate-dorset run 1\) \*\*\*$", text, re.MULTILINE)
    order = [service for service, _ in switched]
    assert sorted(order) == sorted(MOVED), text  # each moved once; library was already in hampshire
    for service, (needs, _) in ESTATE.items():
        for need in needs:
            if service in order:
                assert order.index(need) < order.index(service), f"{service} moved before {need}:\n{text}"
    assert len({token for _, token in switched}) == len(switched)  # each move its own fencing token
    assert "*** demo: site dorset lost (12 services down there) ***" in text
    pages = re.findall(r"^\*\*\* demo pager: firing (\S+) (\S+): ", text, re.MULTILINE)
    assert {where.split("@")[0] for name, where in pages if name != "BcdSiteLost"} == {"directory"}, text
    assert [where for name, where in pages if name == "BcdSiteLost"] == ["dorset"], text
    assert re.search(r"^\*\*\* demo: plan evacuate-dorset run 1 succeeded in \d+\.\ds", text, re.MULTILINE), text
    for service in MOVED:
        assert re.search(rf"^      group [123]  {service} +\d+\.\ds  moved$", text, re.MULTILINE), service
    assert re.search(r"^ +library +- +skipped: already there$", text, re.MULTILINE), text
    assert "Traceback" not in text
    assert returncode == 0


def test_the_site_loss_demo_is_not_a_cluster_demo() -> None:
    result = subprocess.run([sys.executable, "-m", "bcd", "demo", "--cluster", "--site-loss"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert (result.returncode, result.stderr.strip()) == (
        2, "bcd demo: --cluster takes neither --listen (BCD_DEMO_PORTS=p1,p2,p3) nor --site-loss")
