"""A real network partition between two data centres: network namespaces joined through a veth link that the
test cuts (tests/helpers/netns.py), loopback addresses only.

The dorset data centre (its bcd instance and one etcd member) sits in its own namespace; hampshire's instance,
the etcd members of hampshire and the witness, the probe targets and the runbook's step target sit in the hub
namespace with the test. Dorset takes the lock of payroll for an operator's failover and holds it in a step
that waits on the step target; then the link is cut. Dorset must stop acting before its lease validity ends
(`lost_lock`, no further step), hampshire may take the lock only once dorset's lease has expired in etcd, and
when the link comes back dorset rejoins (its view reappears, coordination up) without re-running a step. The
step target remembers the highest fencing token it has seen and would refuse a lower one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bcd.cluster.views import VIEW_MIN_GAP
from tests.helpers import estates, netns
from tests.helpers.daemon import write_config
from tests.helpers.etcd import wait_for
from tests.integration.cluster.kit import WAIT, Member, VantageTarget, gauge
from tests.integration.runbooks.daemon_kit import OPERATOR_TOKEN, sha256

LEASE_TTL = 3.0  # keepalive every TTL/3; steps stop CALL_TIMEOUT before the lease's validity ends
CALL_TIMEOUT = 0.5
# Cut off, an instance's lease validity ends at most LEASE_TTL after the cut; its next view round (every
# VIEW_MIN_GAP) logs coordination_down once its view's put, and the lease loop's ahead of it, end (CALL_TIMEOUT
# each, all endpoints together).
DOWN_NOTICED = LEASE_TTL + 2 * CALL_TIMEOUT + VIEW_MIN_GAP


@dataclass(frozen=True)
class Call:
    path: str
    token: int
    run: str


class FencedTarget:
    """The downstream system the runbook's steps call (POST {"fence": token, ...}): it refuses (409) a token lower
    than the highest it has accepted, as a real one would a stale executor. `/hold` answers only once the test
    sets `released`: a step that keeps its run, and the lock, busy for as long as the test wants."""

    def __init__(self) -> None:
        self.accepted: list[Call] = []
        self.refused: list[Call] = []
        self.released = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def step(self, name: str, path: str) -> dict[str, Any]:
        return {"name": name, "timeout": "60s",
                "http": {"url": self.url(path), "json": {"fence": "{fence_token}", "run": "{run_id}"}}}

    async def start(self) -> FencedTarget:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        call = Call(request.path, int(body["fence"]), str(body["run"]))
        highest = max((seen.token for seen in self.accepted), default=0)
        if call.token < highest:
            self.refused.append(call)
            return web.Response(status=409, text=f"stale fencing token {call.token} < {highest}")
        self.accepted.append(call)
        if call.path == "/hold":
            await self.released.wait()
        return web.Response(text="ok")

    async def calls(self, path: str, count: int) -> list[Call]:
        """The accepted calls to `path`, once there are `count`."""
        await wait_for(lambda: len([c for c in self.accepted if c.path == path]) >= count, WAIT)
        return [c for c in self.accepted if c.path == path]

    async def stop(self) -> None:
        self.released.set()
        if self._runner is not None:
            await self._runner.cleanup()


class SiteMember(Member):
    """A member inside the site's namespace: started through `ip netns exec`, its API on the site's address."""

    def __init__(self, config_path: Path, vantage: str, state_dir: Path, network: netns.SiteNetwork) -> None:
        super().__init__(config_path, vantage, state_dir, {"BCD_LISTEN": network.site_address})
        self.network = network
        self.url = f"http://{network.site_address}:{self.port}"

    def argv(self) -> list[str]:
        return self.network.exec_argv(super().argv())


@dataclass
class PartitionEstate:
    tmp_path: Path
    network: netns.SiteNetwork
    etcd: netns.PlacedEtcdCluster
    dorset: VantageTarget
    hampshire: VantageTarget
    target: FencedTarget
    members: list[Member]

    def config(self) -> dict[str, Any]:
        endpoints = [member.endpoint for member in self.etcd.members]
        return {
            "instance": "bcd",
            "state_dir": "${BCD_STATE}",
            "server": {"listen": "${BCD_LISTEN}:${BCD_PORT}"},
            "sites": {"dorset": {}, "hampshire": {}, "witness": {}},
            "defaults": {"interval": "250ms", "timeout": "200ms", "rise": 1, "fall": 2},
            "services": {"payroll": estates.payroll_service(
                self.dorset.url, self.hampshire.url, failover={"runbook": "move", "mode": "manual", "cooldown": "1s"})},
            "runbooks": {"move": {"steps": [self.target.step("hold", "/hold"), self.target.step("switch", "/switch")]}},
            "auth": {"anonymous_read": True,
                     "tokens": [{"name": "olive", "role": "operator", "sha256": sha256(OPERATOR_TOKEN)}]},
            "cluster": {"name": "partition", "etcd": {"endpoints": endpoints}, "lease_ttl": f"{LEASE_TTL:g}s",
                        "call_timeout": f"{CALL_TIMEOUT * 1000:g}ms", "quorum": "majority"},
        }

    async def start(self) -> tuple[Member, Member]:
        """Write the config (one file for both), start dorset (in its namespace) and hampshire (in the hub);
        return once both are ready, see payroll ok and see each other's view."""
        config_path = write_config(self.tmp_path / "bcd.yaml", self.config())
        dorset = SiteMember(config_path, "dorset", self.tmp_path / "state-dorset", self.network)
        hampshire = Member(config_path, "hampshire", self.tmp_path / "state-hampshire", {"BCD_LISTEN": "127.0.0.1"})
        self.members += [dorset, hampshire]
        await asyncio.gather(dorset.start(), hampshire.start())
        await asyncio.gather(dorset.wait_ready(WAIT), hampshire.wait_ready(WAIT))
        for member in (dorset, hampshire):
            await member.wait_service(lambda s: s["status"] == "ok" and set(s["views"]) == {"dorset", "hampshire"})
        return dorset, hampshire

    async def close(self) -> None:
        """Stop the members (the link healed first, so that dorset's shuts down without waiting on etcd); keep
        their logs next to etcd's for a post-mortem."""
        if self.network.is_cut:
            self.network.heal()
        for member in self.members:
            try:
                if member.running:
                    await member.stop()
            finally:
                with (self.tmp_path / f"bcd-{member.vantage}.log").open("w") as log:
                    log.writelines(json.dumps(line) + "\n" for line in member.log_lines)


@pytest.fixture
async def partition_estate(tmp_path: Path) -> AsyncIterator[PartitionEstate]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"no real network partition on this machine: {reason}")
    with netns.SiteNetwork("dorset") as network, netns.entered(network.hub):
        async with contextlib.AsyncExitStack() as cleanup:  # every step runs, even when one before it fails
            # dorset's etcd member last: both instances start with a member of the majority (a real hampshire
            # instance would start with its own); dorset's client moves on to its local member when it must
            etcd = netns.PlacedEtcdCluster(tmp_path / "etcd", placement=[
                ("hampshire", "127.0.0.1", None), ("witness", "127.0.0.1", None),
                ("dorset", network.site_address, network.site)])
            etcd.start()
            cleanup.callback(etcd.stop_all)
            estate = PartitionEstate(tmp_path, network, etcd, VantageTarget(), VantageTarget(), FencedTarget(), [])
            for server in (estate.dorset, estate.hampshire, estate.target):
                await server.start()
                cleanup.push_async_callback(server.stop)
            cleanup.push_async_callback(estate.close)
            yield estate


def at(line: dict[str, Any]) -> float:
    """When a log line was written (its ISO timestamp), as a Unix time."""
    return datetime.fromisoformat(line["timestamp"]).timestamp()


async def logged_after(member: Member, mark: int, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first line `member` logged after its first `mark` lines that passes `check`."""
    def found() -> dict[str, Any] | None:
        return next((line for line in member.log_lines[mark:] if check(line)), None)

    try:
        await wait_for(found, WAIT, 0.02)
    except TimeoutError:
        seen = [line.get("event") for line in member.log_lines[mark:]]
        raise AssertionError(f"{member.vantage} did not log it within {WAIT:g}s; it logged {seen}") from None
    line = found()
    assert line is not None
    return line


def coordination(member: Member, mark: int) -> str | None:
    """What `member` last logged about coordination (`coordination_up` or `_down`) after its first `mark` lines."""
    said = [line["event"] for line in member.log_lines[mark:]
            if line.get("event") in {"coordination_up", "coordination_down"}]
    return said[-1] if said else None


async def etcd_post(endpoint: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call to etcd's JSON gateway (waiting for a leader if there is none just now)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.post(
        endpoint + path, json=body
    ) as response:
        assert response.status == 200, (path, response.status, await response.text())
        result: dict[str, Any] = await response.json()
        return result


async def lock_lease(estate: PartitionEstate) -> tuple[dict[str, Any], float, int]:
    """(the holder written at payroll's lock key, when etcd was asked about that holder's lease, the whole
    seconds of it etcd said were left): etcd expires the lease, and so frees the lock, no earlier than then."""
    endpoint = estate.etcd.members[0].endpoint
    key = base64.b64encode(b"/bcd/partition/locks/payroll").decode()
    (kv,) = (await etcd_post(endpoint, "/v3/kv/range", {"key": key}))["kvs"]
    holder: dict[str, Any] = json.loads(base64.b64decode(kv["value"]))
    asked_at = time.time()
    lease = await etcd_post(endpoint, "/v3/lease/timetolive", {"ID": holder["lease"]})
    return holder, asked_at, int(lease["TTL"])


async def failover(member: Member) -> int:
    """Ask `member` for a failover, again while its coordination is down for a moment (etcd re-electing a
    leader on a loaded machine); the id of the run it started."""
    reply = await member.poll(lambda: member.transfer("failover"),
                              lambda r: r.status != 409 or r.body.get("guard") != "coordination_unavailable",
                              "a failover accepted")
    assert reply.status == 202, reply
    run_id: int = reply.body["id"]
    return run_id


async def test_a_partitioned_lock_holder_stops_before_its_lease_ends_and_rejoins_without_rerunning_a_step(
    partition_estate: PartitionEstate,
) -> None:
    estate, target = partition_estate, partition_estate.target
    dorset, hampshire = await estate.start()

    run_id = await failover(dorset)  # the instance asked takes the lock and runs the runbook
    (hold,) = await target.calls("/hold", 1)
    assert hold.run == str(run_id)
    await hampshire.wait_service(lambda s: s["lock"] == {"holder": "dorset", "held_here": False})

    await cut_while_holding(estate, dorset, hampshire, hold)
    assert target.accepted == [hold]

    await heal(estate, dorset, hampshire, run_id)
    assert target.accepted == [hold]

    # an operator acknowledges and fails over again from dorset: a new run under a new, higher token
    acked = await dorset.call("POST", "/api/v1/services/payroll/ack", json_body={"reason": "partition over"})
    assert acked.status == 200, acked
    for member in (dorset, hampshire):  # the acknowledgement travels through etcd
        await member.wait_service(lambda s: s["status"] == "ok")
    again = await failover(dorset)
    _, second = await target.calls("/hold", 2)
    assert second.run == str(again)
    assert second.token > hold.token
    target.released.set()
    for member in (dorset, hampshire):
        await member.wait_service(lambda s: s["active"] == "hampshire" and s["status"] == "ok")
    assert target.accepted == [hold, second, Call("/switch", second.token, second.run)]
    assert target.refused == []  # no call with a stale token ever reached it


async def cut_while_holding(estate: PartitionEstate, dorset: Member, hampshire: Member, hold: Call) -> None:
    """Cut dorset off while its run (`hold` is its first step's call) holds the lock: dorset stops before its
    lease validity ends, hampshire takes the lock only once etcd has expired dorset's lease, and goes on with the
    etcd majority."""
    run_id = int(hold.run)
    mark = len(dorset.log_lines)
    await dorset.wait_service(lambda s: s["coordination"] == "up" and s["lock"] == {"holder": "dorset",
                                                                                    "held_here": True})
    holder, asked_at, lease_left = await lock_lease(estate)
    assert holder["vantage"] == "dorset"
    cut_at = time.time()
    estate.network.cut()

    # dorset, alone with its minority etcd member: its lease validity ends at most LEASE_TTL after the cut (the
    # last keepalive answered before it), and the step stops a safety margin (CALL_TIMEOUT) before that
    stopped = await logged_after(dorset, mark, lambda e: e.get("event") == "lost_lock" and e.get("run_id") == run_id)
    # and says coordination is down on its next view round after that validity ends (DOWN_NOTICED)
    down = await logged_after(dorset, mark, lambda e: e.get("event") == "coordination_down")
    # hampshire takes the lock (to mark dorset's run interrupted) only once etcd has expired dorset's lease
    taken = await hampshire.wait_log(lambda e: e.get("event") == "lock acquired" and e.get("vantage") == "hampshire")
    timings = {"etcd_lease_left": asked_at + lease_left - cut_at, "stopped": at(stopped) - cut_at,
               "down": at(down) - cut_at, "taken": at(taken) - cut_at}
    print(f"\nseconds after the cut: {', '.join(f'{k} {v:.2f}' for k, v in timings.items())}")
    assert timings["stopped"] < LEASE_TTL - CALL_TIMEOUT + 0.25, timings
    assert timings["down"] < DOWN_NOTICED + 0.25, timings
    assert timings["taken"] >= timings["etcd_lease_left"], timings
    assert timings["taken"] - timings["stopped"] >= 0.5 * CALL_TIMEOUT, timings  # dorset had stopped well before

    blocked = await hampshire.wait_service(lambda s: s["status"] == "blocked" and set(s["views"]) == {"hampshire"})
    assert blocked["guard"] == "run_interrupted"  # and dorset's view went with dorset's lease
    (mirrored,) = await hampshire.runs()
    assert mirrored["result"] == "interrupted"
    assert mirrored["evidence"]["remote_run"] == f"dorset:{run_id}"
    assert mirrored["evidence"]["token"] == hold.token

    async def coordinating() -> bool:  # the majority side goes on
        return gauge(await hampshire.metrics(), "bcd_cluster_coordination_up") == 1

    await hampshire.wait_until(coordinating, WAIT)
    assert hampshire.logged("step_started") == []
    assert coordination(dorset, mark) == "coordination_down"  # dorset never thought itself coordinated meanwhile


async def heal(estate: PartitionEstate, dorset: Member, hampshire: Member, run_id: int) -> None:
    """Bring the link back: dorset rejoins (coordination up, its view back on both sides) and starts nothing."""
    mark = len(dorset.log_lines)
    estate.network.heal()
    await logged_after(dorset, mark, lambda e: e.get("event") == "coordination_up")
    for member in (dorset, hampshire):
        shown = await member.wait_service(lambda s: set(s["views"]) == {"dorset", "hampshire"}
                                          and s["coordination"] == "up" and s["lock"] is None)
        assert shown["status"] == "blocked"
        assert shown["guard"] == "run_interrupted"
    interrupted = await dorset.run(run_id)
    assert interrupted["result"] == "interrupted"
    assert interrupted["detail"].startswith("lost_lock: ")
    assert [(step["name"], step["outcome"]) for step in interrupted["steps"]] == [("hold", "interrupted")]
    assert [run["id"] for run in await dorset.runs()] == [run_id]  # nothing was started again on its own
