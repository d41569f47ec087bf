"""The runner with real steps: retries, failures, rollback, abort, approval, dry run, masking, one run at a
time. A real Runner on a real journal; steps call a real HTTP server and run real scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.model import RunResult
from bcd.runbooks.runner import RunConflict
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import Kit, command_step, http_step, read_pids, run_ended, wait_gone

FAST_RETRY = {"attempts": 3, "wait": "10ms", "max_wait": "20ms"}


async def test_http_step_retries_5xx_then_succeeds(kit: Kit) -> None:
    async with Recorder([503, 503, 200]) as server:
        run, steps = await kit.run({"steps": [http_step("switch", server.url("/switch"), retry=FAST_RETRY)]})
    assert run.result == "succeeded"
    assert [(s.name, s.outcome, s.attempts) for s in steps] == [("switch", "succeeded", 3)]
    assert server.paths() == ["/switch"] * 3
    assert "HTTP 200" in steps[0].output
    assert kit.hooks.succeeded == [("payroll", "hampshire", run.id)]


async def test_http_step_gives_up_after_its_attempts(kit: Kit) -> None:
    async with Recorder([503]) as server:
        run, steps = await kit.run({"steps": [http_step("switch", server.url("/switch"), retry=FAST_RETRY)]})
    assert run.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 3)
    assert "HTTP 503 (expected 2xx)" in steps[0].output
    assert len(server.requests) == 3
    assert kit.hooks.succeeded == []


async def test_http_4xx_is_not_retried(kit: Kit) -> None:
    async with Recorder([409, 200]) as server:
        run, steps = await kit.run({"steps": [http_step("switch", server.url("/switch"), retry=FAST_RETRY)]})
    assert run.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 1)
    assert "HTTP 409" in steps[0].output
    assert len(server.requests) == 1


async def test_connection_refused_is_retried(kit: Kit) -> None:
    server = await Recorder().start()
    url = server.url("/switch")
    await server.stop()  # nothing listens there any more
    run, steps = await kit.run({"steps": [http_step("switch", url, retry=FAST_RETRY)]})
    assert run.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 3)


async def test_command_retryable_exit_code_is_retried(kit: Kit, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    step = command_step("fence", "runbook-exit-sequence", str(calls), "75", "75", "0",
                        retryable_exit_codes=[75], retry=FAST_RETRY)
    run, steps = await kit.run({"steps": [step]})
    assert run.result == "succeeded"
    assert (steps[0].outcome, steps[0].attempts) == ("succeeded", 3)
    assert calls.read_text().count("call") == 3


async def test_command_other_exit_code_is_not_retried(kit: Kit, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    step = command_step("fence", "runbook-exit-sequence", str(calls), "3", "0",
                        retryable_exit_codes=[75], retry=FAST_RETRY)
    run, steps = await kit.run({"steps": [step]})
    assert run.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 1)
    assert "exited 3" in steps[0].output
    assert calls.read_text().count("call") == 1


async def test_failed_step_runs_rollback_and_later_steps_do_not_run(kit: Kit, recorder: Recorder) -> None:
    async with Recorder([500]) as broken:
        run, steps = await kit.run({
            "steps": [http_step("drain", recorder.url("/drain")), http_step("switch", broken.url("/switch")),
                      http_step("announce", recorder.url("/announce"))],
            "rollback": [http_step("undrain", recorder.url("/undrain"))],
        })
    assert run.result == "rolled_back"
    assert [(s.phase, s.name, s.outcome) for s in steps] == [
        ("main", "drain", "succeeded"), ("main", "switch", "failed"), ("rollback", "undrain", "succeeded"),
    ]
    assert recorder.paths() == ["/drain", "/undrain"]


async def test_failed_rollback_leaves_the_run_failed(kit: Kit) -> None:
    async with Recorder([500]) as broken:
        run, _ = await kit.run({
            "steps": [http_step("switch", broken.url("/switch"))],
            "rollback": [http_step("undo", broken.url("/undo"))],
        })
    assert run.result == "failed"
    assert run.detail == "a step failed; rollback failed too"


async def test_on_failure_continue_goes_on(kit: Kit, recorder: Recorder) -> None:
    async with Recorder([500]) as broken:
        run, steps = await kit.run({"steps": [
            {**http_step("optional", broken.url("/x")), "on_failure": "continue"},
            http_step("switch", recorder.url("/switch")),
        ]})
    assert run.result == "succeeded"
    assert [s.outcome for s in steps] == ["failed", "succeeded"]


async def test_abort_cancels_the_step_kills_its_process_group_and_rolls_back(
    kit: Kit, recorder: Recorder, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    run = kit.start({
        "steps": [command_step("hang", "runbook-hang-with-child", env={"PIDS_TO": str(pids_file)}),
                  http_step("never", recorder.url("/never"))],
        "rollback": [http_step("undo", recorder.url("/undo"))],
    })
    pids = await read_pids(pids_file)
    assert len(pids) == 2  # the script and the child it spawned
    assert kit.runner.abort(run.id, "olive")
    assert run.task is not None
    await run.task
    record, steps = kit.finished(run.id)
    assert record.result == "aborted"
    assert record.detail == "aborted by olive; rolled back"
    assert [(s.name, s.outcome) for s in steps] == [("hang", "aborted"), ("undo", "succeeded")]
    assert recorder.paths() == ["/undo"]
    await wait_gone(pids)


async def test_abort_of_a_sleep_step_runs_rollback(kit: Kit, recorder: Recorder) -> None:
    run = kit.start({
        "steps": [{"name": "wait-ttl", "sleep": {"duration": "30s"}}],
        "rollback": [http_step("undo", recorder.url("/undo"))],
    })
    await kit.wait_step_started(run, "wait-ttl")
    assert kit.runner.abort(run.id, "olive")
    assert not kit.runner.abort(run.id, "olive")  # once is enough
    await run_ended(run, 5)  # (a timeout cancelling the run would look like the abort)
    record, steps = kit.finished(run.id)
    assert record.result == "aborted"
    assert [(s.name, s.outcome) for s in steps] == [("wait-ttl", "aborted"), ("undo", "succeeded")]
    assert recorder.paths() == ["/undo"]


async def test_approval_waits_then_continues_when_approved(kit: Kit, recorder: Recorder) -> None:
    run = kit.start({"steps": [
        {"name": "ok?", "approval": {"timeout": "30s", "prompt": "switch DNS?"}},
        http_step("switch", recorder.url("/switch")),
    ]})
    await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting")
    info = kit.runner.running("payroll")
    assert info is not None and info.waiting_approval and info.step == "switch DNS?"
    record = kit.journal.get(run.id)
    assert record is not None and record.result == "waiting_approval"
    assert recorder.requests == []  # nothing after the approval step runs before the approval
    assert kit.runner.approve(run.id, "olive")
    assert run.task is not None
    await run.task
    record, steps = kit.finished(run.id)
    assert record.result == "succeeded"
    assert (steps[0].name, steps[0].outcome, steps[0].output) == ("ok?", "succeeded", "approved by olive")
    assert recorder.paths() == ["/switch"]


async def test_approval_timeout_fails_the_run(kit: Kit, recorder: Recorder) -> None:
    run, steps = await kit.run({"steps": [
        {"name": "ok?", "approval": {"timeout": "100ms"}}, http_step("switch", recorder.url("/switch")),
    ]})
    assert run.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 1)
    assert "no approval within 0.1s" in steps[0].output
    assert recorder.requests == []


async def test_approval_timeout_runs_rollback(kit: Kit, recorder: Recorder) -> None:
    run, steps = await kit.run({
        "steps": [{"name": "ok?", "approval": {"timeout": "100ms"}}, http_step("switch", recorder.url("/switch"))],
        "rollback": [http_step("undo", recorder.url("/undo"))],
    })
    assert run.result == "rolled_back"
    assert [(s.name, s.outcome) for s in steps] == [("ok?", "failed"), ("undo", "succeeded")]
    assert recorder.paths() == ["/undo"]


async def test_dry_run_journals_rendered_inputs_and_executes_nothing(kit: Kit, recorder: Recorder) -> None:
    run, steps = await kit.run({"steps": [
        http_step("switch", recorder.url("/{service}/to/{to_site}"), json={"from": "{from_site}", "run": "{run_id}"}),
        {"name": "approve", "approval": {"timeout": "1h"}},
        {"name": "settle", "sleep": {"duration": "1h"}},
        {"name": "check", "wait_healthy": {"site": "{to_site}", "within": "1h"}},
    ]}, dry_run=True)
    assert run.result == "dry_run"
    assert recorder.requests == []
    assert [(s.name, s.outcome, s.attempts) for s in steps] == [
        ("switch", "dry_run", 0), ("approve", "dry_run", 0), ("settle", "dry_run", 0), ("check", "dry_run", 0),
    ]
    assert steps[0].inputs["url"] == recorder.url("/payroll/to/hampshire")
    assert steps[0].inputs["json"] == {"from": "dorset", "run": str(run.id)}
    assert steps[3].inputs["site"] == "hampshire"
    assert kit.hooks.succeeded == []  # a dry run moves nothing


async def test_templates_are_filled_in_what_is_sent(kit: Kit, recorder: Recorder) -> None:
    step = http_step("switch", recorder.url("/dns/{service}"), method="PUT",
                     headers={"X-Run": "{run_id}", "X-Trigger": "{trigger}"},
                     json={"from": "{from_site}", "to": "{to_site}", "fence": "{fence_token}"})
    run, _ = await kit.run({"steps": [step]}, trigger="olive")
    (sent,) = recorder.requests
    assert (sent.method, sent.path) == ("PUT", "/dns/payroll")
    assert (sent.headers["X-Run"], sent.headers["X-Trigger"]) == (str(run.id), "olive")
    assert sent.json() == {"from": "dorset", "to": "hampshire", "fence": str(run.id)}


async def test_literal_braces_in_a_body_are_sent_as_braces(kit: Kit, recorder: Recorder) -> None:
    step = http_step("switch", recorder.url("/switch"), body='{{"service": "{service}"}}',
                     headers={"Content-Type": "application/json"})
    run, steps = await kit.run({"steps": [step]})
    assert run.result == "succeeded", (run.detail, [s.output for s in steps])
    assert recorder.requests[0].json() == {"service": "payroll"}


async def test_secrets_are_sent_but_never_journaled(kit: Kit, recorder: Recorder) -> None:
    secret = "s3cr3t-from-env"
    runner = kit.make_runner(secrets=frozenset({secret}))
    step = http_step("switch", recorder.url("/switch"),
                     headers={"Authorization": "Bearer literal-bearer-value", "X-Key": secret},
                     json={"note": f"key={secret}"})
    run = kit.start({"steps": [step]}, runner=runner)
    assert run.task is not None
    await run.task
    record, steps = kit.finished(run.id)
    assert record.result == "succeeded"
    sent = recorder.requests[0]
    assert sent.headers["Authorization"] == "Bearer literal-bearer-value"
    assert sent.headers["X-Key"] == secret
    assert steps[0].inputs["headers"] == {"Authorization": "***", "X-Key": "***"}
    assert steps[0].inputs["json"] == {"note": "key=***"}
    journaled = repr([s.to_dict() for s in steps]) + repr([e.to_json() for e in kit.hooks.events])
    assert secret not in journaled
    assert "literal-bearer-value" not in journaled


async def test_a_second_run_of_the_same_service_is_refused(kit: Kit, recorder: Recorder) -> None:
    first = kit.start({"steps": [{"name": "wait", "sleep": {"duration": "30s"}}]})
    with pytest.raises(RunConflict, match=f"run {first.id} of payroll is in progress"):
        kit.start({"steps": [http_step("switch", recorder.url("/switch"))]})
    other = kit.start({"steps": [http_step("switch", recorder.url("/switch"))]}, service="library")
    assert other.task is not None
    await other.task  # another service may run meanwhile
    assert kit.journal.get(other.id).result == "succeeded"  # type: ignore[union-attr]
    assert kit.runner.abort(first.id, "olive")
    assert first.task is not None
    await first.task
    assert [r.result for r in kit.journal.recent("payroll")] == [RunResult.ABORTED]


async def test_shutdown_journals_the_run_interrupted(kit: Kit, recorder: Recorder) -> None:
    run = kit.start({
        "steps": [{"name": "wait", "sleep": {"duration": "30s"}}],
        "rollback": [http_step("undo", recorder.url("/undo"))],
    })
    await kit.wait_step_started(run, "wait")
    await kit.runner.stop()
    record, steps = kit.finished(run.id)
    assert record.result == "interrupted"
    assert [(s.name, s.outcome) for s in steps] == [("wait", "interrupted")]
    assert recorder.requests == []  # no rollback on shutdown: a human decides


async def test_recover_marks_unfinished_runs_interrupted(kit: Kit) -> None:
    run = kit.start({"steps": [{"name": "wait", "sleep": {"duration": "30s"}}]})
    await kit.wait_step_started(run, "wait")
    # a second runner on the same journal sees what a restarted daemon sees: a run still `running`
    stale = kit.make_runner().recover()
    assert [r.id for r in stale] == [run.id]
    record, steps = kit.finished(run.id)
    assert record.result == "interrupted"
    assert steps[0].outcome == "interrupted"
    assert kit.journal.unacknowledged("payroll") is not None
