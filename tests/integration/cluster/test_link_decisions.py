"""One cluster member in process (its engine, runner and ClusterLink over a real three-member etcd), and another
vantage played by the test through its own real EtcdCoordinator (it publishes hampshire's view as a bcd would):

- a view that changes between the decision reading it and the lock's transaction stops the run: no lock is
  taken, `views_changed` is journaled, and the service is decided again with the new view;
- votes cover every site of a service, and the standby must be up for a quorum too;
- the lock holder deletes the service's old run records at the end of a run, keeping the newest ones.

The one seam: `Interleaved`, an EtcdCoordinator that runs a hook of the test just before its next lock
transaction, which is where another vantage's view can change after our decision read it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bcd.bus import Bus, Subscription
from bcd.cluster import ClusterLink
from bcd.config import parse
from bcd.coordination import EtcdCoordinator, Lock
from bcd.coordination.etcd import EtcdClient
from bcd.engine import Engine
from bcd.events import Event
from bcd.journal import Journal
from bcd.model import Observation, ProbeKey, Result
from bcd.outputs.metrics import ClusterCollector
from bcd.runbooks.runner import Runner
from tests.helpers import estates
from tests.helpers.etcd import EtcdCluster, wait_for
from tests.helpers.runner_kit import acting
from tests.helpers.sqlite_full import BIG, FullJournal


class Interleaved(EtcdCoordinator):
    """A real EtcdCoordinator that runs `before_lock` (once) just before its next lock transaction, and keeps
    every lock it was granted."""

    before_lock: Callable[[], Awaitable[None]] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.granted: list[Lock] = []

    async def acquire(self, service: str, views: Mapping[str, int] | None = None, seen_at: int = 0) -> Lock | None:
        if self.before_lock is not None:
            hook, self.before_lock = self.before_lock, None
            await hook()
        lock = await super().acquire(service, views, seen_at)
        if lock is not None:
            self.granted.append(lock)
        return lock


def view(dorset: str, hampshire: str = "up") -> bytes:
    """hampshire's vantage's view of payroll, as a bcd publishes it."""
    sites = {"dorset": dorset, "hampshire": hampshire}
    return json.dumps({"vantage": "hampshire", "at": time.time(), "services": {"payroll": {
        site: {"state": state, "since": 0.0, "reason": "HTTP 503" if state == "down" else "all probes passing"}
        for site, state in sites.items()}}}).encode()


@dataclass
class Member:
    engine: Engine
    runner: Runner
    link: ClusterLink
    coordinator: Interleaved
    peer: EtcdCoordinator  # hampshire's vantage
    store: EtcdClient  # the test's own client, for reading and seeding the store
    client: EtcdClient  # this member's client
    prefix: str
    events: Subscription
    reprobes: list[str]  # what the link asked to probe again here ("site: reason"), as the scheduler would

    def observe(self, site: str, result: Result) -> None:
        self.engine.observe(Observation(ProbeKey("payroll", site, "health"), result, 0.01,
                                        "HTTP 503" if result is Result.FAIL else "HTTP 200", time.time()))

    async def event(self, match: Callable[[Event], bool]) -> Event:
        """The next event on the bus that `match`es (events are published at the engine's group commit)."""
        async with asyncio.timeout(5):
            while True:
                event = await self.events.get()
                if match(event):
                    return event

    async def peer_sees(self, dorset: str, hampshire: str = "up") -> None:
        """hampshire publishes its view; return once this member has it."""
        await self.peer.publish_view(view(dorset, hampshire))

        def arrived() -> bool:
            peer = self.link.peers().get("hampshire")
            return peer is not None and str(peer.services["payroll"]["dorset"].state) == dorset \
                and str(peer.services["payroll"]["hampshire"].state) == hampshire

        await wait_for(arrived)

    async def records(self) -> dict[str, dict[str, Any]]:
        kvs, _ = await self.store.range(self.prefix + "runs/payroll/", prefix=True)
        return {kv.key.removeprefix(self.prefix): json.loads(kv.value) for kv in kvs}


@pytest.fixture
async def member(tmp_path: Path, etcd_cluster: EtcdCluster, request: pytest.FixtureRequest,
                 ) -> AsyncIterator[Member]:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    endpoints = etcd_cluster.endpoints
    config = parse(estates.payroll(tmp_path, step="{name: settle, sleep: {duration: 10ms}}", mode="auto"))
    bus = Bus()
    events = bus.subscribe("test")
    async with EtcdClient(endpoints, request_timeout=0.5, deadline=1.0) as ours, \
            EtcdClient(endpoints, request_timeout=0.5, deadline=1.0) as theirs, EtcdClient(endpoints) as store:
        def lost(service: str) -> None:  # as the composition root wires it
            link.lost(service)

        coordinator = Interleaved(ours, cluster=name, vantage="dorset", lease_ttl=3, on_lost=lost)
        reprobes: list[str] = []
        engine, runner = acting(config, Journal(tmp_path / "bcd.sqlite"), bus, cluster=lambda made: ClusterLink(
            coordinator, made, vantage="dorset", lease_ttl=3, call_timeout=0.5, keep_runs=3,
            reprobe=lambda site, reason: reprobes.append(f"{site}: {reason}")))
        link = engine.cluster
        assert isinstance(link, ClusterLink)
        peer = EtcdCoordinator(theirs, cluster=name, vantage="hampshire", lease_ttl=3)
        await link.start()
        await peer.start()
        live = Member(engine, runner, link, coordinator, peer, store, ours, f"/bcd/{name}/", events, reprobes)
        live.observe("dorset", Result.OK)
        live.observe("hampshire", Result.OK)
        await wait_for(lambda: link.available and peer.available)
        try:
            yield live
        finally:
            await runner.stop()
            await link.stop()
            await peer.stop()
            engine.journal.close()


def status(guard: str | None) -> Callable[[Event], bool]:
    return lambda event: event.kind == "service_status" and event.to_json().get("guard") == guard


async def test_a_view_changed_between_the_decision_and_the_lock_stops_the_run(member: Member) -> None:
    await member.peer_sees(dorset="down")  # hampshire sees dorset down: with ours, a quorum of two
    counted = member.link.counted_views()

    async def hampshire_sees_dorset_up_again() -> None:  # after our decision read the views, before the lock
        await member.peer.publish_view(view(dorset="up"))

    member.coordinator.before_lock = hampshire_sees_dorset_up_again
    member.observe("dorset", Result.FAIL)  # dorset down here too: the decision is "fail over"

    changed = await member.event(lambda event: event.kind == "views_changed")
    assert changed.reason.startswith(
        "payroll: automatic failover to hampshire not started: the views counted changed since they were read: "
        f"hampshire (revision {counted['hampshire']} -> ")
    assert changed.reason.endswith("; deciding again")
    # decided again with hampshire's new view: no quorum, and nothing ran
    blocked = await member.event(status("no_quorum"))
    assert "no quorum: 1 of 2 live vantages see dorset down, 2 needed; down: dorset; dissenting: hampshire up" \
        in blocked.reason
    assert member.coordinator.granted == []  # the lock was never taken
    assert member.runner.active == {} and member.engine.runs.recent(None, 10) == []
    assert [event.kind for event in member.engine.journal.events(service="payroll")].count("views_changed") == 1
    assert member.engine.services["payroll"].active == "dorset"


async def test_a_view_that_appears_between_the_decision_and_the_lock_stops_the_run(member: Member) -> None:
    """A vantage with no view when the decision read them (here a witness starting) could have changed the
    outcome: its view, written before the lock's transaction, refuses the lock; decided again with it."""
    await member.peer_sees(dorset="down")  # hampshire sees dorset down: with ours, a quorum of two
    witness = EtcdCoordinator(member.store, cluster=member.prefix.split("/")[2], vantage="witness", lease_ttl=3)
    await witness.start()

    async def the_witness_appears() -> None:  # after our decision read the views, before the lock
        await witness.publish_view(json.dumps({"vantage": "witness", "at": time.time(), "services": {"payroll": {
            site: {"state": "up", "since": 0.0, "reason": "all probes passing"}
            for site in ("dorset", "hampshire")}}}).encode())

    try:
        member.coordinator.before_lock = the_witness_appears
        member.observe("dorset", Result.FAIL)  # dorset down here too: the decision is "fail over"
        changed = await member.event(lambda event: event.kind == "views_changed")
        assert re.search(r"the views counted changed since they were read: witness \(written at revision \d+, "
                         r"not counted\); deciding again$", changed.reason), changed.reason
        # decided again with the witness counted: 2 of 3 vantages see dorset down, a quorum; the run goes ahead
        started = await member.event(lambda event: event.kind == "run_started")
        run = member.engine.runs.get(int(started.to_json()["run_id"]))
        assert run is not None and "witness" in run.evidence["quorum"]["votes"], run
        assert len(member.coordinator.granted) == 1  # the refused attempt took no lock
    finally:
        await witness.stop()


async def test_unchanged_views_run_and_the_holder_prunes_old_records(member: Member) -> None:
    for token, result, acknowledged in ((1, "succeeded", None), (2, "failed", "olive"), (3, "succeeded", None),
                                        (4, "interrupted", "olive"), (5, "succeeded", None)):
        old = {"vantage": "hampshire", "run_id": token, "token": token, "service": "payroll", "kind": "failover",
               "runbook": "move", "trigger": "auto", "reason": "an earlier run", "from": "hampshire", "to": "dorset",
               "dry_run": False, "forced": False, "result": result, "started": 1000.0 + token,
               "ended": 1001.0 + token, "detail": "", "steps": [], "acknowledged_by": acknowledged}
        await member.store.put(f"{member.prefix}runs/payroll/{token}", json.dumps(old).encode())
    await member.peer_sees(dorset="down")
    counted = member.link.counted_views()
    member.observe("dorset", Result.FAIL)

    started = await member.event(lambda event: event.kind == "run_started")
    (lock,) = member.coordinator.granted
    finished = await member.event(lambda event: event.kind == "run_finished" and event.to_json().get("run_id")
                                  == started.to_json()["run_id"])
    assert finished.to_json()["result"] == "succeeded"
    await wait_for(lambda: not member.link.holds("payroll"))  # final record written, records pruned, released

    records = await member.records()
    assert sorted(records) == sorted(f"runs/payroll/{token}" for token in (lock.token, 5, 4))
    assert records[f"runs/payroll/{lock.token}"]["result"] == "succeeded"
    run = member.engine.runs.get(int(started.to_json()["run_id"]))
    assert run is not None
    assert run.evidence["quorum"]["view_revisions"] == counted  # the views its lock's transaction checked


async def test_votes_cover_every_site_and_the_standby_needs_a_quorum_too(member: Member) -> None:
    await member.peer_sees(dorset="down", hampshire="down")  # hampshire's vantage sees both sites down
    votes = {(sample.labels["site"], sample.labels["state"]): sample.value
             for family in ClusterCollector(member.link.figures).collect() if family.name == "bcd_site_votes"
             for sample in family.samples if sample.labels["service"] == "payroll"}
    assert votes[("dorset", "up")] == 1 and votes[("dorset", "down")] == 1
    assert votes[("hampshire", "up")] == 1 and votes[("hampshire", "down")] == 1
    views = member.link.service_json("payroll")["views"]
    assert {vantage: {site: item["state"] for site, item in seen["sites"].items()}
            for vantage, seen in views.items()} == {"dorset": {"dorset": "up", "hampshire": "up"},
                                                    "hampshire": {"dorset": "down", "hampshire": "down"}}

    member.observe("dorset", Result.FAIL)  # dorset down for both; hampshire up here only
    blocked = await member.event(status("standby_not_up"))
    assert blocked.reason.endswith("no standby up for a quorum of vantages (1 of 2 live vantages see hampshire up, "
                                   "2 needed; dissenting: hampshire down (HTTP 503))")
    await member.peer_sees(dorset="down", hampshire="up")  # now both see hampshire up: the failover goes ahead
    await member.event(lambda event: event.kind == "run_started")
    assert len(member.coordinator.granted) == 1


async def test_a_run_of_another_instance_is_mirrored_with_its_kind(member: Member) -> None:
    record = {"vantage": "hampshire", "run_id": 9, "token": 9, "service": "payroll", "kind": "failback",
              "runbook": "move", "trigger": "olive", "reason": "planned", "from": "hampshire", "to": "dorset",
              "dry_run": False, "forced": False, "result": "succeeded", "started": 1000.0, "ended": 1001.0,
              "detail": "payroll now active in dorset", "steps": [], "acknowledged_by": None}
    await member.store.put(f"{member.prefix}runs/payroll/9", json.dumps(record).encode())
    await member.store.put(f"{member.prefix}runs/payroll/10", b'{"vantage": "hampshire", "token": 10}')

    finished = await member.event(lambda event: event.kind == "run_finished")
    shown = finished.to_json()  # what the API and the SSE stream send
    assert (shown["kind"], shown["run_kind"], shown["remote_run"], shown["result"]) == (
        "run_finished", "failback", "hampshire:9", "succeeded")
    (mirrored,) = member.engine.runs.recent("payroll", 10)  # the malformed record is skipped, not mirrored
    assert (mirrored.kind, mirrored.evidence["remote_run"]) == ("failback", "hampshire:9")


def remote_run(token: int, detail: str = "payroll now active in hampshire") -> bytes:
    """A finished run record of hampshire's, as a bcd writes it."""
    return json.dumps({"vantage": "hampshire", "run_id": token, "token": token, "service": "payroll",
                       "kind": "failover", "runbook": "move", "trigger": "auto", "reason": "dorset down",
                       "from": "dorset", "to": "hampshire", "dry_run": False, "forced": False, "result": "succeeded",
                       "started": 1000.0 + token, "ended": 1001.0 + token, "detail": detail, "steps": [],
                       "acknowledged_by": None}).encode()


async def test_other_instances_runs_are_mirrored_all_in_one_commit_or_none_and_announced_once(
    member: Member,
) -> None:
    """A sync pass journals every record it mirrors in one commit. When the journal refuses them (full: the last
    record needs new pages), none is journaled and none announced; once there is room, the next pass mirrors
    each once. (One commit each journaled the first ones and left the rest, each with its own fsync.)"""
    full = FullJournal(member.engine.journal)
    full.fill()
    with capture_logs() as logs:
        for token in range(20, 25):
            await member.store.put(f"{member.prefix}runs/payroll/{token}",
                                   remote_run(token, BIG if token == 24 else "payroll now active in hampshire"))
        await wait_for(lambda: any(line["event"] == "cluster-sync_failed" for line in logs))
    assert member.engine.runs.recent("payroll", 10) == []
    assert not [event for event in drained(member.events) if event.kind == "run_finished"]  # announced: none
    full.free()
    finished = [await member.event(lambda event: event.kind == "run_finished") for _ in range(5)]
    assert sorted(event.to_json()["remote_run"] for event in finished) == [f"hampshire:{n}" for n in range(20, 25)]
    # a later record: by the time it is mirrored, a pass went over the five again and mirrored none of them twice
    await member.store.put(f"{member.prefix}runs/payroll/25", remote_run(25))
    later = await member.event(lambda event: event.kind == "run_finished")
    assert later.to_json()["remote_run"] == "hampshire:25"
    assert len(member.engine.runs.recent("payroll", 10)) == 6


def drained(events: Subscription) -> list[Event]:
    """What the subscription holds now."""
    taken = []
    while not events.queue.empty():
        taken.append(events.queue.get_nowait())
    return taken


async def test_another_instance_s_records_and_view_arrive_through_the_watch_without_a_read(member: Member) -> None:
    reads = member.client.requests["/v3/kv/range"]
    record = {"vantage": "hampshire", "run_id": 3, "token": 3, "service": "payroll", "kind": "failover",
              "runbook": "move", "trigger": "auto", "reason": "dorset down", "from": "dorset", "to": "hampshire",
              "dry_run": False, "forced": False, "result": "succeeded", "started": 1000.0, "ended": 1001.0,
              "detail": "payroll now active in hampshire", "steps": [], "acknowledged_by": None}
    written = time.monotonic()
    await member.store.put(f"{member.prefix}runs/payroll/3", json.dumps(record).encode())
    await member.store.put(f"{member.prefix}active/payroll", b'{"site": "hampshire", "run": "hampshire:3"}')
    finished = await member.event(lambda event: event.kind == "run_finished")
    await wait_for(lambda: member.engine.services["payroll"].active == "hampshire")
    arrived = time.monotonic() - written
    await member.peer_sees(dorset="down")
    assert finished.to_json()["remote_run"] == "hampshire:3"
    # mirrored, adopted and seen with no read of the store: the records and the view came through the watch
    assert member.client.requests["/v3/kv/range"] == reads
    assert arrived < 1.0, arrived


async def test_another_vantage_seeing_a_site_fail_re_probes_it_here_once_per_change(member: Member) -> None:
    asked = member.reprobes

    async def hampshire_publishes(**sites: tuple[str, float]) -> None:  # site → (state, since)
        await member.peer.publish_view(json.dumps({"vantage": "hampshire", "at": time.time(), "services": {
            "payroll": {site: {"state": state, "since": since, "reason": f"{state} since {since:g}"}
                        for site, (state, since) in sites.items()}}}).encode())

    await hampshire_publishes(dorset=("down", 1.0), hampshire=("up", 0.0))  # dorset is up here: look again
    await wait_for(lambda: len(asked) == 1)
    await hampshire_publishes(dorset=("down", 1.0), hampshire=("degraded", 2.0))  # dorset: the same change
    await wait_for(lambda: len(asked) == 2)
    member.observe("dorset", Result.FAIL)  # dorset down here too: nothing to look at again
    await hampshire_publishes(dorset=("down", 3.0), hampshire=("up", 0.0))
    await hampshire_publishes(dorset=("down", 3.0), hampshire=("down", 4.0))
    await wait_for(lambda: len(asked) == 3)
    assert asked == ["dorset: hampshire sees payroll down at dorset: down since 1",
                     "hampshire: hampshire sees payroll degraded at hampshire: degraded since 2",
                     "hampshire: hampshire sees payroll down at hampshire: down since 4"]
