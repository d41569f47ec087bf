"""The chaos soak's end-of-run checks (bench/soak_checks.py) fail on the defects they are named for and pass
on the differences a kill -9 is allowed to leave."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from soak_checks import (  # noqa: E402
    Incarnation,
    JournalView,
    StepRun,
    check_flat,
    check_logs,
    check_one_run_at_a_time,
    check_ran_on,
    check_runs_kept,
    check_steps_once,
    check_transitions,
    last_error,
    read_recorder,
)

T1 = ("payroll", "dorset", "up", "down", "2 consecutive failures of health: HTTP 503")
T2 = ("payroll", "hampshire", "up", "down", "2 consecutive failures of health: HTTP 503")
T3 = ("payroll", "dorset", "down", "up", "2 consecutive successes")


def incarnation(number: int, spawned: float, died: float, ended_by: str, ready: float | None = None,
                logged: tuple[tuple[str, str, str, str, str], ...] = ()) -> Incarnation:
    inc = Incarnation(number, 1000 + number, spawned, Path(f"daemon-{number}.log"), ready_at=ready or spawned + 1,
                      died=died, ended_by=ended_by)
    inc.lines = [{"event": "site_transition", "service": s, "site": site, "from_state": f, "to_state": t,
                  "reason": r} for s, site, f, t, r in logged]
    return inc


def journal(transitions: list[tuple[float, tuple[str, str, str, str, str]]] | None = None,
            steps: dict[tuple[int, str], tuple[str, str, float | None]] | None = None,
            runs: dict[int, str] | None = None) -> JournalView:
    return JournalView(runs or {}, dict.fromkeys(runs or {}, "payroll"), steps or {}, list(transitions or []))


def test_the_recorder_reads_what_the_step_script_writes(tmp_path: Path) -> None:
    recorder = tmp_path / "steps.log"
    subprocess.run([sys.executable, "-S", str(BENCH / "soak_step.py"), str(recorder), "7", "fence", "0"], check=True,
                   capture_output=True)
    with recorder.open("a") as out:
        out.write("7 promote 12")  # a torn line
    (execution,), bad = read_recorder(recorder)
    assert (execution.run_id, execution.step) == (7, "fence")
    assert execution.end is not None and execution.end >= execution.start
    assert bad == ["7 promote 12"]


def test_a_step_started_twice_fails() -> None:
    twice = [StepRun(3, "fence", 10, 1.0, 2.0), StepRun(3, "fence", 11, 5.0, None), StepRun(3, "promote", 12, 2, 3)]
    check = check_steps_once(twice, [])
    assert not check.ok
    assert check.details == ("run 3 step fence started 2 times",)
    assert check_steps_once(twice[1:], []).ok


def test_a_run_or_step_missing_from_the_journal_fails_and_a_finished_step_must_have_run() -> None:
    executions = [StepRun(1, "fence", 10, 1.0, 2.0), StepRun(2, "fence", 11, 3.0, None)]
    kept = journal(runs={1: "succeeded", 2: "interrupted"},
                   steps={(1, "fence"): ("command", "succeeded", 2.0), (2, "fence"): ("command", "interrupted", 4.0),
                          (2, "promote"): ("command", "interrupted", 4.0)})
    assert check_runs_kept(executions, kept).ok  # journaled as started, killed before it ran: allowed
    lost = journal(runs={1: "succeeded"}, steps={(1, "fence"): ("command", "succeeded", 2.0)})
    assert check_runs_kept(executions, lost).details == (
        "run 2 ran steps but is not in the journal", "run 2 step fence ran but is not in the journal")
    unseen = journal(runs={1: "succeeded", 2: "failed"},
                     steps={(1, "fence"): ("command", "succeeded", 2.0), (2, "fence"): ("command", "failed", 4.0)})
    assert check_runs_kept(executions, unseen).details == (
        "run 2 step fence is failed in the journal but the recorder saw no end",)


def test_a_step_still_running_when_the_next_daemon_is_ready_fails() -> None:
    killed = incarnation(1, 0.0, 10.0, "kill -9 mid-step")
    restarted = incarnation(2, 10.2, 100.0, "SIGTERM", ready=13.0)
    steps = {(5, "fence"): ("command", "interrupted", 13.0), (6, "fence"): ("command", "interrupted", 13.0)}
    gap = [StepRun(5, "fence", 10, 9.0, 12.0)]  # ended before the restarted daemon was ready: reported only
    check, info = check_ran_on(gap, journal(steps=steps), [killed, restarted], set())
    assert check.ok and len(info) == 1
    ran_on = [StepRun(6, "fence", 11, 9.5, 14.0)]
    check, _ = check_ran_on(ran_on, journal(steps=steps), [killed, restarted], set())
    assert not check.ok and "ran on after its daemon's kill -9" in check.details[0]
    never_ended = [StepRun(6, "fence", 11, 9.5, None)]  # still alive when incarnation 2 was ready
    check, _ = check_ran_on(never_ended, journal(steps=steps), [killed, restarted], {(6, "fence")})
    assert not check.ok


def test_transitions_unlogged_only_in_the_last_group_commit_before_a_kill() -> None:
    wanted = [(1.0, T1), (5.0, T2), (5.02, T3)]
    killed = incarnation(1, 0.0, 5.1, "kill -9", logged=(T1,))
    later = incarnation(2, 6.0, 9.0, "SIGTERM")
    check = check_transitions(journal(wanted), [killed, later])
    assert check.ok, check.details
    assert "2 unlogged" in check.summary
    stopped = incarnation(1, 0.0, 5.1, "SIGTERM", logged=(T1,))
    assert not check_transitions(journal(wanted), [stopped, later]).ok  # a clean stop logs everything
    spread = [(1.0, T1), (2.0, T2), (5.0, T3)]
    assert not check_transitions(journal(spread), [killed, later]).ok  # more than one group commit


def test_a_logged_transition_that_is_not_journaled_fails() -> None:
    inc = incarnation(1, 0.0, 5.0, "kill -9", logged=(T1, T2))
    check = check_transitions(journal([(1.0, T1)]), [inc])
    assert not check.ok
    assert check.details == ("incarnation 1: log and journal differ at transition 1 (2 logged, 1 journaled)",)


def test_memory_growing_in_an_incarnation_fails_and_noise_does_not() -> None:
    inc = incarnation(1, 0.0, 200.0, "SIGTERM", ready=1.0)
    inc.samples = [(t, 60.0 + t / 20, 20) for t in range(25, 200, 2)]  # 3 MB/min
    check = check_flat([inc], 1, "memory flat", "MB", slope_limit=30, growth_limit=3)
    assert not check.ok
    inc.samples = [(t, 60.0 + (t % 4) / 2, 20) for t in range(25, 200, 2)]
    assert check_flat([inc], 1, "memory flat", "MB", slope_limit=30, growth_limit=3).ok


def test_the_exception_line_of_a_grouped_traceback() -> None:
    text = "  + Exception Group Traceback\n    | File x\n    | RecursionError: maximum recursion depth\n    +----"
    assert last_error(text) == "RecursionError: maximum recursion depth"


def test_two_runs_of_one_service_at_once_fail_even_across_members() -> None:
    inc = incarnation(1, 0.0, 100.0, "SIGTERM")
    kept = journal(runs={1: "interrupted", 2: "succeeded"})
    orphan = [StepRun(1, "fence", 10, 10.0, 16.0)]  # ran on while run 2 began
    check = check_one_run_at_a_time([([*orphan, StepRun(2, "fence", 11, 14.0, 20.0)], kept, [inc])])
    assert check.details == ("payroll: run 2 started a step 2.0s before run 1 ended",)
    assert check_one_run_at_a_time([([*orphan, StepRun(2, "fence", 11, 16.5, 20.0)], kept, [inc])]).ok
    across = check_one_run_at_a_time([(orphan, kept, [inc]), ([StepRun(1, "fence", 12, 15.0, 18.0)], kept, [inc])])
    assert across.details == ("payroll: member 2 run 1 started a step 1.0s before member 1 run 1 ended",)


def test_an_unhandled_exception_or_a_link_lost_without_a_broker_stop_fails() -> None:
    inc = incarnation(1, 0.0, 100.0, "SIGTERM")
    inc.lines = [{"event": "mqtt_connection_lost", "level": "warning"}]
    assert check_logs([inc], broker_stops=[50.0]).ok
    assert check_logs([inc], broker_stops=[]).details == ("incarnation 1: MQTT link lost 1 times, broker stopped 0",)
    inc.lines = [{"event": "Task exception was never retrieved", "level": "error",
                  "exception": "Traceback\n  File x\nRecursionError: maximum recursion depth exceeded"}]
    check = check_logs([inc], broker_stops=[])
    assert check.details == ("Task exception was never retrieved (RecursionError: maximum recursion depth exceeded)",)
