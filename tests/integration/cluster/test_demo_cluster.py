"""`bcd demo --cluster` runs three instances on an embedded three-member etcd and tells a quorum decision:
no quorum while one vantage alone sees dorset down, then exactly one failover once every vantage does, run by
hampshire's instance (the target site's) while the witness (`executor: false`) says it waits for it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

from bcd.demo_cluster import free_port


async def test_the_cluster_demo_shows_no_quorum_then_one_failover() -> None:
    ports = ",".join(str(free_port()) for _ in range(3))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bcd", "demo", "--cluster", "--fail-after", "2",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "BCD_DEMO_PORTS": ports},
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(40):
            while not all(any(line.startswith(f"[{vantage:<9}] payroll: ok: payroll: active site hampshire up")
                              for line in seen) for vantage in ("dorset", "hampshire", "witness")):
                line = (await process.stdout.readline()).decode()
                assert line, "the demo ended early:\n" + "".join(seen)
                seen.append(line)
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = await process.communicate()
    text = "".join(seen) + rest.decode()
    assert "[hampshire] payroll: blocked (no_quorum): payroll: failover blocked (no quorum: 1 of 3 live vantages" in text
    assert text.count("*** demo load balancer: payroll now served from hampshire") == 1
    assert re.search(r"^\[hampshire\] payroll: run \d+ started \(auto\)", text, re.MULTILINE), text
    assert not re.search(r"^\[(dorset|witness) *\] payroll: run \d+ started", text, re.MULTILINE), text
    assert "[witness  ] payroll: failing_over: payroll: failover to hampshire: waiting for hampshire" in text \
        or "[witness  ] payroll: failing_over (run_in_progress): payroll: run hampshire:" in text, text
    for vantage in ("dorset", "hampshire", "witness"):
        assert f"[{vantage:<9}] payroll: ok: payroll: active site hampshire up" in text
    assert process.returncode == 0
