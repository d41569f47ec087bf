"""SIGTERM during a run: the run is journaled interrupted, and a client of the event stream still sees that
(the web server stops after the runner: bcd.app's order)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.integration.runbooks.daemon_kit import VIEWER_TOKEN, Estate


async def test_sigterm_mid_run_the_event_stream_sees_the_run_interrupted_before_it_closes(estate: Estate) -> None:
    steps = [{"name": "confirm", "approval": {"timeout": "1h"}}, estate.step()]
    daemon = await estate.start(estate.config(steps=steps, services={"payroll": estate.service(mode="manual")}))
    seen: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.get(
        daemon.url + "/api/v1/events/stream?service=payroll", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
    ) as stream:
        assert (await stream.content.readline()).startswith(b": connected")
        started = await daemon.transfer("failover")
        assert started.status == 202, started
        await daemon.wait_run(started.body["id"], lambda run: run["waiting_approval"])
        stopped = asyncio.create_task(daemon.stop())
        async with asyncio.timeout(10):
            async for raw in stream.content:  # until the server closes the stream
                line = raw.decode()
                if line.startswith("data: "):
                    seen.append(json.loads(line[6:]))
        assert await stopped == 0
    finished = [event for event in seen if event["kind"] == "run_finished"]
    assert [(event["run_id"], event["result"]) for event in finished] == [(started.body["id"], "interrupted")]
