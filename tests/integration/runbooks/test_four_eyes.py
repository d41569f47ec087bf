"""Four eyes through the daemon's API (`bcd run` as a subprocess, real HTTP targets): an approval step that
needs two different approvers, none of them the initiator; the `approver` role; `require_approval:` gating a
failover of a tier-1 service whose runbook has no approval step."""

from __future__ import annotations

from typing import Any

from tests.integration.runbooks.daemon_kit import Bcd, Estate, sha256

ALICE_TOKEN = "alice-approver-token-0123456789"
BOB_TOKEN = "bob-approver-token-0123456789"


def with_approvers(config: dict[str, Any]) -> dict[str, Any]:
    config["auth"]["tokens"] += [{"name": "alice", "role": "approver", "sha256": sha256(ALICE_TOKEN)},
                                 {"name": "bob", "role": "approver", "sha256": sha256(BOB_TOKEN)}]
    return config


async def approve(daemon: Bcd, run_id: int, token: str, reason: str = "checked") -> Any:
    return await daemon.call("POST", f"/api/v1/runs/{run_id}/approve", token=token, json_body={"reason": reason})


async def approval_events(daemon: Bcd) -> list[tuple[str, str, str]]:
    reply = await daemon.call("GET", "/api/v1/events?service=payroll&limit=500")
    return [(e["kind"], e["by"], e["reason"]) for e in reply.body["events"]
            if e["kind"] in ("approval_given", "approval_refused")]


async def test_the_initiator_is_refused_and_two_distinct_approvers_let_the_step_proceed(estate: Estate) -> None:
    steps = [{"name": "confirm", "approval": {"timeout": "1h", "prompt": "switch DNS?", "approvers": 2,
                                              "distinct_from_initiator": True}}, estate.step()]
    config = with_approvers(estate.config(steps=steps, services={"payroll": estate.service(mode="manual")}))
    daemon = await estate.start(config)
    started = await daemon.transfer("failover")  # by olive, the operator
    assert started.status == 202, started
    run_id = started.body["id"]
    await daemon.wait_run(run_id, lambda r: r["waiting_approval"])

    own = await approve(daemon, run_id, token="operator-token-0123456789")
    assert (own.status, own.content_type) == (409, "application/problem+json")
    assert own.body["detail"] == f"olive started run {run_id}; step 'switch DNS?' needs an approval by someone else"
    first = await approve(daemon, run_id, ALICE_TOKEN, "change CHG-1 seen")
    assert first.status == 202, first
    again = await approve(daemon, run_id, ALICE_TOKEN)
    assert again.status == 409
    assert again.body["detail"] == (f"alice has already approved run {run_id}; step 'switch DNS?' needs 2 different "
                                    "approvers")
    assert (await daemon.run(run_id))["waiting_approval"] is True
    assert estate.steps.requests == []  # one approval of two: the step still waits

    second = await approve(daemon, run_id, BOB_TOKEN, "looks right")
    assert second.status == 202, second
    done = await daemon.wait_run(run_id)
    assert done["result"] == "succeeded"
    assert (done["steps"][0]["outcome"], done["steps"][0]["output"]) == ("succeeded", "approved by alice, bob")
    assert estate.steps.paths() == ["/switch"]
    assert await approval_events(daemon) == [
        ("approval_refused", "olive", f"olive started run {run_id}; step 'switch DNS?' needs an approval by someone "
                                      "else"),
        ("approval_given", "alice", "alice: change CHG-1 seen"),
        ("approval_refused", "alice", again.body["detail"]),
        ("approval_given", "bob", "bob: looks right"),
    ]


async def test_an_approver_cannot_start_a_run_but_may_abort_one(estate: Estate) -> None:
    steps = [{"name": "confirm", "approval": {"timeout": "1h"}}, estate.step()]
    config = with_approvers(estate.config(steps=steps, services={"payroll": estate.service(mode="manual")}))
    daemon = await estate.start(config)
    for path in ("/api/v1/services/payroll/failover", "/api/v1/services/payroll/ack",
                 "/api/v1/services/payroll/maintenance"):
        refused = await daemon.call("POST", path, token=ALICE_TOKEN, json_body={"reason": "x", "duration": "1h"})
        assert (refused.status, refused.body["detail"]) == (403, "alice is an approver; this needs an operator"), path
    assert await daemon.runs() == []

    started = await daemon.transfer("failover")
    run_id = started.body["id"]
    await daemon.wait_run(run_id, lambda r: r["waiting_approval"])
    aborted = await daemon.call("POST", f"/api/v1/runs/{run_id}/abort", token=BOB_TOKEN, json_body={"reason": "no"})
    assert (aborted.status, aborted.body["by"]) == (202, "bob")
    assert (await daemon.wait_run(run_id))["result"] == "aborted"


async def test_require_approval_gates_a_tier_1_failover_whose_runbook_has_none(estate: Estate) -> None:
    service = estate.service()  # automatic failover
    service["labels"] = {"tier": "1"}
    config = with_approvers(estate.config(services={"payroll": service},
                                          require_approval={"labels": {"tier": "1"}, "approvers": 1}))
    daemon = await estate.start(config)
    estate.dorset.status = 503
    (listed,) = await daemon.poll(daemon.runs, lambda runs: bool(runs) and runs[0]["result"] == "waiting_approval",
                                  "a run waiting for approval")
    run = await daemon.run(listed["id"])
    assert [(s["name"], s["kind"], s["outcome"]) for s in run["steps"]] == [
        ("require_approval", "approval", "running")]
    assert estate.steps.requests == []  # the runbook's first step waits behind the gate

    assert (await approve(daemon, run["id"], ALICE_TOKEN)).status == 202
    done = await daemon.wait_run(run["id"])
    assert done["result"] == "succeeded"
    assert [(s["name"], s["output"]) for s in done["steps"]] == [("require_approval", "approved by alice"),
                                                                ("switch", done["steps"][1]["output"])]
    assert estate.steps.paths() == ["/switch"]
