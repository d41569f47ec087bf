"""`bcd demo --site-loss`: Dorset goes dark, the site is declared lost, the evacuation plan (trigger: auto) moves
every service group by group through the simulated load balancer (each move with its fencing token), and the
demo prints the plan's total time and each service's."""

from __future__ import annotations

import asyncio
import signal
import sys

from bcd.demo_site_loss import LEVELS
from tests.helpers.daemon import free_port

DONE = "*** demo: plan run 1 of evacuate-dorset succeeded in "


async def test_the_site_loss_demo_evacuates_dorset_in_dependency_order() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bcd", "demo", "--site-loss", "--fail-after", "2", "--listen",
        f"127.0.0.1:{free_port()}", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not seen or not seen[-1].strip().startswith("group 3  social-care"):  # the table's last row
                line = (await process.stdout.readline()).decode()
                assert line, "the demo ended early:\n" + "".join(seen)
                seen.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        await process.communicate()
    text = "".join(seen)
    assert "*** demo: site dorset lost: every service probed there is down (" in text
    moves = [line.split("/")[1] for line in seen if line.startswith("*** demo load balancer: hampshire/")]
    assert sorted(moves) == sorted(LEVELS)  # each service moved once
    for name, needs in LEVELS.items():
        assert all(moves.index(need) < moves.index(name) for need in needs), (name, moves)
    assert "hampshire/directory/enable (fence=1, plan=evacuate-dorset, plan_run=1)" in text  # with its token
    done = next(index for index, line in enumerate(seen) if line.startswith(DONE))
    table = [line.split() for line in seen[done + 1:]]
    assert {row[2]: row[3] for row in table} == dict.fromkeys(LEVELS, "moved")
    assert process.returncode == 0
