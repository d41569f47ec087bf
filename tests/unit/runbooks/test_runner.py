"""The runner's rules, one table or test each: a step is journaled `running` before it runs; only errors that
may pass are retried; `on_failure` and rollback decide a run's result; approvals are waited for, given or time
out; an abort kills the step's process group; at most `max_concurrent` runs execute steps at once; `recover()`
marks what a dead daemon left unfinished; a dry run journals every step rendered and masked and runs none.

A real Runner on a real SQLite journal, with real step kinds (/bin/true, /bin/false, /bin/sleep, a real HTTP
server on 127.0.0.1, approvals, sleeps); the daemon side (RunHooks) is the kit's recording fake. Where the
journaled times matter the runner has a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from bcd.runbooks.runner import RunConflict
from tests.helpers.recorder import Recorder
from tests.helpers.runner_kit import Kit, alive, eventually, http_step, run_ended, wait_gone

FAST = {"attempts": 3, "wait": "1ms", "max_wait": "2ms"}


class Clock:
    """A fake clock: time moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def command(name: str, *argv: str, **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"argv": list(argv)}
    if "retryable_exit_codes" in options:
        spec["retryable_exit_codes"] = options.pop("retryable_exit_codes")
    return {"name": name, "command": spec, **options}


TRUE = command("true", "/bin/true")
FALSE = command("false", "/bin/false")
HOLD = {"name": "hold", "approval": {"timeout": "1h"}}


def outcomes(kit: Kit, run_id: int) -> list[tuple[str, str, str]]:
    return [(step.phase, step.name, step.outcome) for step in kit.journal.steps(run_id)]


# -- journaling --------------------------------------------------------------------------------------------------

async def test_a_step_is_journaled_running_before_it_runs_and_finished_after(kit: Kit) -> None:
    clock = Clock(5000.0)
    kit.runner = kit.make_runner(clock=clock)
    run = kit.start({"steps": [command("hold", "/bin/sleep", "30")]})
    await kit.wait_step_started(run, "hold")
    (step,) = kit.journal.steps(run.id)
    assert (step.outcome, step.started, step.ended, step.inputs) == (
        "running", 5000.0, None, {"argv": ["/bin/sleep", "30"], "env": {}, "retryable_exit_codes": []})
    record = kit.journal.get(run.id)
    assert record is not None and (record.result, record.started) == ("running", 5000.0)

    clock.now = 5042.0
    assert kit.runner.abort(run.id, "olive")
    await run_ended(run)
    (step,) = kit.journal.steps(run.id)
    assert (step.outcome, step.ended) == ("aborted", 5042.0)
    assert kit.journal.get(run.id).ended == 5042.0  # type: ignore[union-attr]


async def test_the_daemon_side_hears_of_a_run_as_it_goes(kit: Kit) -> None:
    run = kit.start({"steps": [TRUE]})
    await run_ended(run)
    assert [event.kind for event in kit.hooks.events] == ["run_started", "step_started", "step_finished",
                                                          "run_finished"]
    assert kit.hooks.succeeded == [("payroll", "hampshire", run.id)]
    assert kit.hooks.changed == ["payroll", "payroll"]  # started, finished: the engine decides again each time
    assert kit.runner.running("payroll") is None


# -- one run per service, at most N at once -----------------------------------------------------------------------

async def test_a_second_run_of_a_service_is_refused_while_the_first_runs(kit: Kit) -> None:
    first = kit.start({"steps": [HOLD]})
    with pytest.raises(RunConflict, match=rf"^run {first.id} of payroll is in progress$"):
        kit.start({"steps": [TRUE]})
    assert [record.id for record in kit.journal.recent("payroll")] == [first.id]  # the refused one left no row
    await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting")
    assert kit.runner.approve(first.id, "olive")
    await run_ended(first)
    await run_ended(kit.start({"steps": [TRUE]}))  # once it has ended, the next may start


@pytest.mark.parametrize(("limit", "queued"), [(1, True), (2, False)])
async def test_runs_beyond_max_concurrent_wait_for_a_slot(kit: Kit, limit: int, queued: bool) -> None:
    kit.runner = kit.make_runner(max_concurrent=limit)
    payroll = kit.start({"steps": [HOLD]})
    await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting")
    library = kit.start({"steps": [{"name": "second", "approval": {"timeout": "1h"}}]}, service="library")
    record = kit.journal.get(library.id)
    assert record is not None and record.result == "running"  # journaled at once, waiting or not
    assert kit.runner.running("library") is not None
    if not queued:  # a free slot: it goes as far as its own approval while the first run holds its slot
        await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting" and e.service == "library")
    assert kit.runner.approve(payroll.id, "olive")
    await run_ended(payroll)
    await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting" and e.service == "library")
    kinds = [(event.kind, event.service) for event in kit.hooks.events]
    library_began = kinds.index(("step_started", "library"))
    payroll_ended = kinds.index(("run_finished", "payroll"))
    assert (library_began > payroll_ended) is queued, kinds
    assert kit.runner.approve(library.id, "olive")
    await run_ended(library)


# -- retries -----------------------------------------------------------------------------------------------------

RETRIES = [  # (step, statuses the HTTP server answers) → (outcome, attempts, words in the output)
    pytest.param(command("c", "/bin/true", retry=FAST), None, "succeeded", 1, "exited 0", id="command-ok"),
    pytest.param(command("c", "/bin/false", retry=FAST), None, "failed", 1, "/bin/false exited 1",
                 id="command-exit-not-retryable"),
    pytest.param(command("c", "/bin/false", retryable_exit_codes=[1], retry=FAST), None, "failed", 3,
                 "/bin/false exited 1", id="command-exit-retryable"),
    pytest.param(command("c", "/bin/sleep", "30", timeout="50ms", retry=FAST), None, "failed", 1,
                 "timeout after 0.05s", id="command-timeout-not-retried"),
    pytest.param({"name": "h", "retry": FAST}, [503, 200], "succeeded", 2, "HTTP 200", id="http-5xx-then-ok"),
    pytest.param({"name": "h", "retry": FAST}, [503], "failed", 3, "HTTP 503", id="http-5xx-every-time"),
    pytest.param({"name": "h", "retry": FAST}, [404], "failed", 1, "HTTP 404", id="http-4xx-not-retried"),
]


@pytest.mark.parametrize(("step", "statuses", "outcome", "attempts", "output"), RETRIES)
async def test_only_errors_that_may_pass_are_retried(
    kit: Kit, recorder: Recorder, step: dict[str, Any], statuses: list[int] | None, outcome: str, attempts: int,
    output: str,
) -> None:
    if statuses is not None:
        recorder.set_statuses(statuses)
        step = {**http_step(step["name"], recorder.url("/switch")), "retry": step["retry"]}
    record, (journaled,) = await kit.run({"steps": [step]})
    assert (journaled.outcome, journaled.attempts) == (outcome, attempts)
    assert output in journaled.output
    assert record.result == ("succeeded" if outcome == "succeeded" else "failed")
    if statuses is not None:
        assert len(recorder.requests) == attempts


# -- on_failure and rollback ---------------------------------------------------------------------------------------

FAILURES = [  # runbook → (result, detail, the steps journaled: phase, name, outcome)
    pytest.param({"steps": [TRUE, FALSE, command("after", "/bin/true")]},
                 "failed", "a step failed",
                 [("main", "true", "succeeded"), ("main", "false", "failed")], id="abort-without-rollback"),
    pytest.param({"steps": [FALSE, command("after", "/bin/true")], "rollback": [command("undo", "/bin/true")]},
                 "rolled_back", "a step failed; rollback completed",
                 [("main", "false", "failed"), ("rollback", "undo", "succeeded")], id="abort-and-roll-back"),
    pytest.param({"steps": [FALSE], "rollback": [command("undo", "/bin/false"), command("more", "/bin/true")]},
                 "failed", "a step failed; rollback failed too",
                 [("main", "false", "failed"), ("rollback", "undo", "failed")], id="rollback-fails"),
    pytest.param({"steps": [{**FALSE, "on_failure": "continue"}, command("after", "/bin/true")],
                  "rollback": [command("undo", "/bin/true")]},
                 "succeeded", "payroll now active in hampshire",
                 [("main", "false", "failed"), ("main", "after", "succeeded")], id="continue"),
    pytest.param({"steps": [TRUE], "cleanup": [command("teardown", "/bin/true")]},
                 "succeeded", "payroll now active in hampshire; cleanup completed",
                 [("main", "true", "succeeded"), ("cleanup", "teardown", "succeeded")], id="cleanup-after-success"),
    pytest.param({"steps": [FALSE, command("after", "/bin/true")], "rollback": [command("undo", "/bin/true")],
                  "cleanup": [command("teardown", "/bin/true")]},
                 "rolled_back", "a step failed; rollback completed; cleanup completed",
                 [("main", "false", "failed"), ("rollback", "undo", "succeeded"), ("cleanup", "teardown", "succeeded")],
                 id="cleanup-after-failure"),
    pytest.param({"steps": [TRUE], "cleanup": [command("teardown", "/bin/false"), command("more", "/bin/true")]},
                 "failed", "payroll now active in hampshire; cleanup failed",
                 [("main", "true", "succeeded"), ("cleanup", "teardown", "failed")], id="cleanup-fails"),
]


@pytest.mark.parametrize(("runbook", "result", "detail", "steps"), FAILURES)
async def test_a_failed_step_aborts_and_rolls_back_unless_it_may_continue(
    kit: Kit, runbook: dict[str, Any], result: str, detail: str, steps: list[tuple[str, str, str]]
) -> None:
    record, _ = await kit.run(runbook)
    assert (record.result, record.detail) == (result, detail)
    assert outcomes(kit, record.id) == steps
    assert kit.hooks.succeeded == ([("payroll", "hampshire", record.id)] if result == "succeeded" else [])


# -- approvals -----------------------------------------------------------------------------------------------------

async def test_an_approved_run_goes_on(kit: Kit) -> None:
    run = kit.start({"steps": [{"name": "ok?", "approval": {"timeout": "1h", "prompt": "move payroll?"}}, TRUE]})
    waiting = await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting")
    assert (waiting.reason, waiting.to_json()["step"]) == (f"run {run.id} waits for approval", "move payroll?")
    info = kit.runner.running("payroll")
    assert info is not None and (info.waiting_approval, info.step) == (True, "move payroll?")
    assert kit.journal.get(run.id).result == "waiting_approval"  # type: ignore[union-attr]
    assert outcomes(kit, run.id) == [("main", "ok?", "running")]  # nothing after it ran
    assert not kit.runner.approve(run.id + 1, "olive")  # no such run
    assert kit.runner.approve(run.id, "olive")
    assert not kit.runner.approve(run.id, "olive")  # once is enough
    await run_ended(run)
    record, steps = kit.finished(run.id)
    assert record.result == "succeeded"
    assert [(step.name, step.outcome, step.output) for step in steps] == [
        ("ok?", "succeeded", "approved by olive"), ("true", "succeeded", "/bin/true exited 0")]


async def test_an_approval_not_given_in_time_fails_the_step(kit: Kit) -> None:
    record, steps = await kit.run({"steps": [{"name": "ok?", "approval": {"timeout": "20ms"}}, TRUE],
                                   "rollback": [command("undo", "/bin/true")]})
    assert record.result == "rolled_back"
    assert [(step.name, step.outcome) for step in steps] == [("ok?", "failed"), ("undo", "succeeded")]
    assert "no approval within 0.02s" in steps[0].output
    assert not kit.runner.approve(record.id, "olive")  # too late


# -- abort ----------------------------------------------------------------------------------------------------------

async def test_an_abort_kills_the_steps_process_group_and_rolls_back(kit: Kit) -> None:
    run = kit.start({"steps": [command("hold", "/bin/sleep", "30"), command("after", "/bin/true")],
                     "rollback": [command("undo", "/bin/true")]})
    processes: list[tuple[int, str, int, int]] = []

    def started() -> bool:
        processes[:] = kit.journal.unfinished_processes(run.id)
        return bool(processes)

    await eventually(started, 10, "the step's process group being journaled")
    ((seq, name, pgid, _),) = processes
    assert (seq, name, alive(pgid)) == (1, "hold", True)
    assert kit.runner.abort(run.id, "olive")
    assert not kit.runner.abort(run.id, "olive")  # once is enough
    await run_ended(run)
    await wait_gone([pgid])
    record, _ = kit.finished(run.id)
    assert (record.result, record.detail) == ("aborted", "aborted by olive; rolled back")
    assert outcomes(kit, run.id) == [("main", "hold", "aborted"), ("rollback", "undo", "succeeded")]


async def test_an_aborted_run_still_runs_its_cleanup(kit: Kit) -> None:
    run = kit.start({"steps": [command("hold", "/bin/sleep", "30")], "cleanup": [command("teardown", "/bin/true")]})
    await kit.wait_step_started(run, "hold")
    assert kit.runner.abort(run.id, "olive")
    await run_ended(run)
    record, _ = kit.finished(run.id)
    assert (record.result, record.detail) == ("aborted", "aborted by olive; cleanup completed")
    assert outcomes(kit, run.id) == [("main", "hold", "aborted"), ("cleanup", "teardown", "succeeded")]


async def test_an_abort_of_an_unknown_or_ended_run_is_refused(kit: Kit) -> None:
    run = kit.start({"steps": [TRUE]})
    await run_ended(run)
    assert not kit.runner.abort(run.id, "olive")
    assert not kit.runner.abort(run.id + 1, "olive")


# -- recovery after a crash ----------------------------------------------------------------------------------------

async def test_recover_marks_what_a_dead_daemon_left_unfinished_interrupted(kit: Kit) -> None:
    ended = kit.start({"steps": [TRUE]})
    await run_ended(ended)
    crashed = kit.start({"steps": [HOLD]})
    await kit.hooks.wait_event(lambda e: e.kind == "approval_waiting")
    kit.hooks.events.clear()

    # a second runner on the same journal sees what a restarted daemon sees
    restarted = kit.make_runner(clock=Clock(9000.0), kill_orphans=False)
    assert [record.id for record in restarted.recover()] == [crashed.id]
    record, steps = kit.finished(crashed.id)
    assert (record.result, record.ended) == ("interrupted", 9000.0)
    assert [(step.name, step.outcome) for step in steps] == [("hold", "interrupted")]
    assert kit.finished(ended.id)[0].result == "succeeded"  # a finished run is left as it was
    (event,) = kit.hooks.events
    assert (event.kind, event.reason, event.to_json()["result"]) == (
        "run_finished", "interrupted: the daemon stopped during this run", "interrupted")
    unacknowledged = kit.journal.unacknowledged("payroll")
    assert unacknowledged is not None and unacknowledged.id == crashed.id  # a human looks before anything runs
    assert restarted.recover() == []  # nothing twice


# -- dry runs --------------------------------------------------------------------------------------------------------

async def test_a_dry_run_journals_each_step_rendered_and_masked_and_runs_none(kit: Kit, recorder: Recorder) -> None:
    secret = "s3cr3t-value"
    kit.runner = kit.make_runner(secrets=frozenset({secret}))
    record, steps = await kit.run({"steps": [
        command("fence", "/bin/false", "{from_site}", f"--key={secret}"),
        http_step("switch", recorder.url("/{service}/to/{to_site}"), headers={"Authorization": "Bearer x"}),
        HOLD,
        {"name": "settle", "sleep": {"duration": "1h"}},
    ], "rollback": [command("undo", "/bin/false")]}, dry_run=True)
    assert (record.result, record.detail, record.dry_run) == ("dry_run", "dry run: no step executed", True)
    assert [(step.phase, step.name, step.outcome, step.attempts) for step in steps] == [
        ("main", "fence", "dry_run", 0), ("main", "switch", "dry_run", 0), ("main", "hold", "dry_run", 0),
        ("main", "settle", "dry_run", 0)]
    assert steps[0].inputs["argv"] == ["/bin/false", "dorset", "--key=***"]
    assert steps[1].inputs["url"] == recorder.url("/payroll/to/hampshire")
    assert steps[1].inputs["headers"] == {"Authorization": "***"}
    assert recorder.requests == []
    assert kit.hooks.succeeded == []  # a dry run moves nothing
    assert secret not in repr([step.to_dict() for step in steps]) + repr([e.to_json() for e in kit.hooks.events])
