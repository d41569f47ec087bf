"""Operators and runs through the daemon's HTTP API: abort with rollback, approval, authentication and
bad requests, secrets kept out of what the API and the journal show."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers.runner_kit import SCRIPTS, alive, read_pids, wait_gone
from tests.integration.runbooks.daemon_kit import VIEWER_TOKEN, Estate


async def test_abort_kills_the_step_runs_rollback_and_reports_aborted(estate: Estate, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    hang = {"name": "fence", "command": {"argv": [str(SCRIPTS / "runbook-hang-with-child")],
                                         "env": {"PIDS_TO": str(pids_file)}}}
    config = estate.config(steps=[hang, estate.step("switch", "/switch")],
                           rollback=[estate.step("undo", "/undo")],
                           services={"payroll": estate.service(mode="manual")})
    daemon = await estate.start(config)
    started = await daemon.transfer("failover")
    assert started.status == 202, started
    run_id = started.body["id"]
    pids = await read_pids(pids_file)
    assert all(alive(pid) for pid in pids)
    running = await daemon.run(run_id)
    assert (running["result"], running["steps"][0]["outcome"]) == ("running", "running")
    assert (await daemon.service())["status"] == "failing_over"

    viewer = await daemon.call("POST", f"/api/v1/runs/{run_id}/abort", token=VIEWER_TOKEN, json_body={})
    assert viewer.status == 403
    reply = await daemon.call("POST", f"/api/v1/runs/{run_id}/abort", json_body={"reason": "wrong site"})
    assert reply.status == 202, reply
    assert reply.body == {"run": run_id, "action": "abort", "by": "olive"}

    run = await daemon.wait_run(run_id)
    assert (run["result"], run["detail"]) == ("aborted", "aborted by olive; rolled back")
    assert [(s["phase"], s["name"], s["outcome"]) for s in run["steps"]] == [
        ("main", "fence", "aborted"), ("rollback", "undo", "succeeded")]
    assert estate.steps.paths() == ["/undo"]
    await wait_gone(pids)  # the script and its child: the whole process group
    again = await daemon.call("POST", f"/api/v1/runs/{run_id}/abort", json_body={})
    assert (again.status, again.body["detail"]) == (409, f"run {run_id} is not in progress")
    service = await daemon.wait_service(lambda s: s["status"] == "blocked")
    assert (service["guard"], service["active"]) == ("run_failed", "dorset")


async def test_approval_step_waits_for_an_operator_then_continues(estate: Estate) -> None:
    steps = [{"name": "confirm", "approval": {"timeout": "1h", "prompt": "switch DNS?"}}, estate.step()]
    daemon = await estate.start(estate.config(steps=steps))
    estate.dorset.status = 503
    service = await daemon.wait_service(lambda s: s["status"] == "failover_pending" and s["guard"] is not None)
    assert service["guard"] == "run_in_progress"
    assert "waits for approval of step 'switch DNS?'" in service["reason"]
    (listed,) = await daemon.runs()
    run = await daemon.run(listed["id"])
    assert (run["result"], run["waiting_approval"]) == ("waiting_approval", True)
    assert estate.steps.requests == []

    viewer = await daemon.call("POST", f"/api/v1/runs/{run['id']}/approve", token=VIEWER_TOKEN, json_body={})
    assert viewer.status == 403
    reply = await daemon.call("POST", f"/api/v1/runs/{run['id']}/approve", json_body={"reason": "go"})
    assert reply.status == 202, reply
    done = await daemon.wait_run(run["id"])
    assert (done["result"], done["waiting_approval"]) == ("succeeded", False)
    first = done["steps"][0]
    assert (first["name"], first["outcome"], first["output"]) == ("confirm", "succeeded", "approved by olive")
    assert estate.steps.paths() == ["/switch"]
    assert (await daemon.wait_service(lambda s: s["status"] == "ok"))["active"] == "hampshire"
    late = await daemon.call("POST", f"/api/v1/runs/{run['id']}/approve", json_body={})
    assert (late.status, late.body["detail"]) == (409, f"run {run['id']} is not waiting for approval")


async def test_approval_timeout_fails_the_run_and_rolls_back(estate: Estate) -> None:
    steps = [{"name": "confirm", "approval": {"timeout": "300ms"}}, estate.step()]
    daemon = await estate.start(estate.config(steps=steps, rollback=[estate.step("undo", "/undo")]))
    estate.dorset.status = 503
    run = await daemon.wait_first_run()
    assert run["result"] == "rolled_back"
    assert [(s["name"], s["outcome"]) for s in run["steps"]] == [("confirm", "failed"), ("undo", "succeeded")]
    assert "no approval within 0.3s" in run["steps"][0]["output"]
    assert estate.steps.paths() == ["/undo"]
    service = await daemon.wait_service(lambda s: s["status"] == "blocked")
    assert (service["guard"], service["active"]) == ("run_failed", "dorset")


async def test_operator_endpoints_need_an_operator_token(estate: Estate) -> None:
    config = estate.config(services={"payroll": estate.service(mode="manual")})
    config["auth"]["anonymous_read"] = False
    daemon = await estate.start(config)

    for path in ("/api/v1/services/payroll/failover", "/api/v1/services/payroll/ack", "/api/v1/runs/1/approve",
                 "/api/v1/runs/1/abort"):
        anonymous = await daemon.call("POST", path, token=None, json_body={"reason": "x"})
        assert anonymous.status == 401, (path, anonymous)
        assert anonymous.content_type == "application/problem+json"
        assert anonymous.body["detail"] == "a bearer token is required"
        viewer = await daemon.call("POST", path, token=VIEWER_TOKEN, json_body={"reason": "x"})
        assert viewer.status == 403, (path, viewer)
        needs = "an approver" if path.startswith("/api/v1/runs") else "an operator"  # approvers approve and abort
        assert viewer.body["detail"] == f"victor is a viewer; this needs {needs}"
    wrong = await daemon.call("POST", "/api/v1/services/payroll/failover", token="guess", json_body={"reason": "x"})
    assert (wrong.status, wrong.body["detail"]) == (401, "unknown token")

    assert (await daemon.call("GET", "/api/v1/runs", token=None)).status == 401
    assert (await daemon.call("GET", "/api/v1/runs", token=VIEWER_TOKEN)).status == 200
    assert (await daemon.call("GET", "/api/v1/services/payroll", token=None)).status == 401

    missing = await daemon.call("POST", "/api/v1/services/nope/failover", json_body={"reason": "x"})
    assert (missing.status, missing.body["detail"]) == (404, "no service named 'nope'")
    assert (await daemon.call("GET", "/api/v1/services/nope", token=VIEWER_TOKEN)).status == 404
    assert (await daemon.call("GET", "/api/v1/runs/999", token=VIEWER_TOKEN)).status == 404

    broken = await daemon.call("POST", "/api/v1/services/payroll/failover", data=b'{"reason": "x",')
    assert broken.status == 400
    assert broken.content_type == "application/problem+json"
    assert broken.body["detail"].startswith("the body is not JSON")
    invalid = await daemon.call("POST", "/api/v1/services/payroll/failover", json_body={"reason": "", "bogus": 1})
    assert invalid.status == 400
    assert {e["field"] for e in invalid.body["errors"]} == {"reason", "bogus"}
    assert (await daemon.call("GET", "/healthz", token=None)).status == 200  # still running
    assert await daemon.runs() == []

    accepted = await daemon.transfer("failover", reason="planned move")
    assert accepted.status == 202, accepted
    assert (accepted.body["trigger"], accepted.body["service"]) == ("olive", "payroll")
    assert daemon.proc is not None and daemon.proc.returncode is None


async def test_secrets_are_sent_but_never_shown_or_journaled(estate: Estate) -> None:
    secret = "sig-7f3a9c2e41d8"
    bearer = "literal-bearer-5b6e0d"
    step = estate.step(headers={"Authorization": f"Bearer {bearer}", "X-Signature": "${BCD_TEST_SIGNATURE}"},
                       json={"note": "signed ${BCD_TEST_SIGNATURE}", "to": "{to_site}"})
    daemon = await estate.start(estate.config(steps=[step]), env={"BCD_TEST_SIGNATURE": secret})
    estate.dorset.status = 503
    run = await daemon.wait_first_run()
    assert run["result"] == "succeeded"

    (sent,) = estate.steps.requests  # the step sent the real values
    assert sent.headers["Authorization"] == f"Bearer {bearer}"
    assert sent.headers["X-Signature"] == secret
    assert sent.json() == {"note": f"signed {secret}", "to": "hampshire"}

    inputs = run["steps"][0]["inputs"]
    assert inputs["headers"] == {"Authorization": "***", "X-Signature": "***"}
    assert inputs["json"] == {"note": "signed ***", "to": "hampshire"}
    shown = (await daemon.call("GET", f"/api/v1/runs/{run['id']}")).body
    listed = (await daemon.call("GET", "/api/v1/runs")).body
    await daemon.stop()
    journal = b"".join(path.read_bytes() for path in estate.state_dir.glob("bcd.sqlite*"))
    logged = json.dumps(daemon.log_lines)
    for where, text in (("run", json.dumps(shown)), ("runs", json.dumps(listed)), ("log", logged)):
        assert secret not in text, where
        assert bearer not in text, where
    assert secret.encode() not in journal
    assert bearer.encode() not in journal
