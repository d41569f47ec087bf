"""`require_approval:` for recovery plans, through the daemon's API (`bcd run` as a subprocess, real HTTP targets):
a plan run that moves a tier-1 service waits before its first group for two different approvers, neither of them
the operator who started it; refusals and approvals are journaled in the run with who; the gate shows on the
status page; the moves are then not gated one by one. A plan moving no tier-1 service does not wait."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.api import OPERATOR, VIEWER, Api, sha
from tests.helpers.daemon import free_port, running, write_config
from tests.helpers.recorder import Recorder
from tests.helpers.targets import HttpTarget, two_sites

BOB = "bob-approver-token-0123456789"
CAROL = "carol-approver-token-0123456789"


def config(state: Path, port: int, recorder: Recorder, dorset: HttpTarget, hampshire: HttpTarget) -> str:
    sites = {"dorset": {"probes": [{"name": "health", "http": {"url": dorset.url}}]},
             "hampshire": {"probes": [{"name": "health", "http": {"url": hampshire.url}}]}}
    failover = {"runbook": "move", "mode": "manual", "cooldown": "0s"}
    return json.dumps({
        "state_dir": str(state), "server": {"listen": f"127.0.0.1:{port}"},
        "sites": {"dorset": {}, "hampshire": {}},
        "defaults": {"interval": "5s", "timeout": "900ms", "rise": 1, "fall": 2},
        "auth": {"tokens": [{"name": "alice", "role": "operator", "sha256": sha(OPERATOR)},
                            {"name": "grafana", "role": "viewer", "sha256": sha(VIEWER)},
                            {"name": "bob", "role": "approver", "sha256": sha(BOB)},
                            {"name": "carol", "role": "approver", "sha256": sha(CAROL)}]},
        "require_approval": {"labels": {"tier": "1"}, "approvers": 2, "distinct_from_initiator": True},
        "runbooks": {"move": {"steps": [{"name": "announce", "http": {"url": recorder.url("/{service}")}}]}},
        "services": {"a": {"active": "dorset", "labels": {"tier": "1"}, "failover": failover, "sites": sites},
                     "b": {"active": "dorset", "failover": failover, "sites": sites}},
        "plans": {"evacuate": {"from": "dorset", "to": "hampshire"},
                  "untiered": {"from": "dorset", "to": "hampshire", "services": ["b"]}},
    })


async def plan_run(daemon: Api, run_id: int) -> dict[str, Any]:
    status, _, body = await daemon.call("GET", f"/api/v1/plan-runs/{run_id}", token=VIEWER)
    assert status == 200, body
    return body  # type: ignore[no-any-return]


async def until(daemon: Api, run_id: int, state: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        run = await plan_run(daemon, run_id)
        return run if run["state"] == state else None
    return await daemon.wait_until(reached, timeout=30, every=0.1)  # type: ignore[no-any-return]


async def start(daemon: Api, plan: str) -> int:
    status, _, body = await daemon.call("POST", f"/api/v1/plans/{plan}/run", body={"reason": "patching"})
    assert status == 202, body
    return body["plan_run"]["id"]  # type: ignore[no-any-return]


async def approve(daemon: Api, run_id: int, token: str) -> tuple[int, str]:
    status, _, body = await daemon.call("POST", f"/api/v1/plan-runs/{run_id}/approve", token=token)
    return status, body["detail"]


async def test_a_plan_moving_a_tier_1_service_waits_for_two_approvers_other_than_its_initiator(
        tmp_path: Path) -> None:
    async with two_sites() as (dorset, hampshire), Recorder() as recorder:
        port = free_port()
        path = write_config(tmp_path / "bcd.yaml", config(tmp_path / "state", port, recorder, dorset, hampshire))
        async with running(Api(path, port), timeout=30) as daemon:
            untiered = await start(daemon, "untiered")  # b only: no tier-1 service, no gate
            run = await until(daemon, untiered, "succeeded")
            assert run["gates"] == [] and recorder.paths() == ["/b"], run

            status, _, shown = await daemon.call("GET", "/api/v1/plans/evacuate", token=VIEWER)
            assert status == 200 and ("gate: 2 different approver(s), not the initiator approve before group 1 "
                                      "(timeout 3600s): a labelled tier=1: approval required before the first "
                                      "group\ngroup 1:\n  a") in shown["order"], shown
            run_id = await start(daemon, "evacuate")
            run = await until(daemon, run_id, "waiting_gate")
            (gate,) = run["gates"]
            assert (gate["after_group"], gate["state"], gate["approvers"], gate["approvals"]) == (0, "waiting", 2, [])
            assert gate["why"] == "a labelled tier=1: approval required before the first group"
            status, _, html = await daemon.call("GET", "/", token=VIEWER)
            assert status == 200 and ("Waiting for approval before group 1 — a labelled tier=1: approval required "
                                      f"before the first group; 0 of 2 approvals (none yet) (bcd plan approve "
                                      f"{run_id})") in html

            assert await approve(daemon, run_id, OPERATOR) == (409, (
                f"alice started plan run {run_id}; its gate before group 1 needs an approval by someone else"))
            assert await approve(daemon, run_id, BOB) == (
                202, f"plan run {run_id} approved by bob; 1 more approval(s) needed")
            assert await approve(daemon, run_id, BOB) == (409, (
                f"bob has already approved plan run {run_id}; its gate before group 1 needs 2 different approvers"))
            assert recorder.paths() == ["/b"]  # nothing moved before the gate opened
            assert await approve(daemon, run_id, CAROL) == (202, f"plan run {run_id}: gate approved by bob, carol")

            run = await until(daemon, run_id, "succeeded")
            assert {m["service"]: m["state"] for m in run["services"]} == {"a": "moved", "b": "skipped"}
            (gate,) = run["gates"]
            assert (gate["state"], gate["by"], gate["approvals"]) == ("approved", "bob, carol", ["bob", "carol"])
            assert [line for line in run["events"] if "approv" in line] == [
                f"approval refused: alice started plan run {run_id}; its gate before group 1 needs an approval by "
                "someone else",
                "gate before group 1 approved by bob",
                f"approval refused: bob has already approved plan run {run_id}; its gate before group 1 needs 2 "
                "different approvers",
                "gate before group 1 approved by carol"]
            assert recorder.paths() == ["/b", "/a"]
            (move,) = [m for m in run["services"] if m["service"] == "a"]
            status, _, record = await daemon.call("GET", f"/api/v1/runs/{move['run_id']}", token=VIEWER)
            assert status == 200 and [step["name"] for step in record["steps"]] == ["announce"], record  # not gated again
