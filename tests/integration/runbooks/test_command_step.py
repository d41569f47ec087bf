"""`command:` steps run real executables: argv without a shell, BCD_* variables, the group killed on timeout."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.runner_kit import Kit, command_step, read, read_pids, wait_gone


async def test_argv_is_passed_literally_without_a_shell(kit: Kit, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    hostile = [f"$(touch {pwned})", f"`touch {pwned}`", f"; touch {pwned}", "*", "$HOME", "two words", ""]
    record = tmp_path / "record"
    run, steps = await kit.run({"steps": [
        command_step("fence", "runbook-record-args", *hostile, env={"RECORD_TO": str(record)}),
    ]})
    assert run.result == "succeeded"
    assert read(Path(f"{record}.args")).split("\n")[:-1] == hostile
    assert not pwned.exists()
    assert steps[0].inputs["argv"][1:] == hostile
    assert steps[0].output.endswith("recorded 7 arguments")


async def test_bcd_variables_describe_the_run(kit: Kit, tmp_path: Path) -> None:
    record = tmp_path / "record"
    run, _ = await kit.run(
        {"steps": [command_step("fence", "runbook-record-args", "{service}:{to_site}",
                                env={"RECORD_TO": str(record)})]},
        trigger="olive",
    )
    env = dict(line.split("=", 1) for line in read(Path(f"{record}.env")).splitlines())
    assert env["BCD_SERVICE"] == "payroll"
    assert env["BCD_FROM_SITE"] == "dorset"
    assert env["BCD_TO_SITE"] == "hampshire"
    assert env["BCD_RUN_ID"] == str(run.id)
    assert env["BCD_TRIGGER"] == "olive"
    assert env["BCD_FENCE_TOKEN"] == str(run.id)
    assert read(Path(f"{record}.args")) == "payroll:hampshire\n"  # argv templates are filled too


async def test_timeout_kills_the_whole_process_group(kit: Kit, tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    run = kit.start({"steps": [
        command_step("hang", "runbook-hang-with-child", env={"PIDS_TO": str(pids_file)}, timeout="500ms",
                     retry={"attempts": 3, "wait": "10ms"}),
    ]})
    pids = await read_pids(pids_file)
    assert run.task is not None
    await run.task
    record, steps = kit.finished(run.id)
    assert record.result == "failed"
    assert (steps[0].outcome, steps[0].attempts) == ("failed", 1)  # a command that timed out is not retried
    assert steps[0].output.startswith("timeout after 0.5s")
    await wait_gone(pids)


async def test_missing_executable_fails_the_step(kit: Kit) -> None:
    run, steps = await kit.run({"steps": [{"name": "fence", "command": {"argv": ["/nonexistent/fence"]}}]})
    assert run.result == "failed"
    assert steps[0].output == "cannot run /nonexistent/fence: No such file or directory"


async def test_killed_by_a_signal_is_reported(kit: Kit) -> None:
    run, steps = await kit.run({"steps": [{"name": "fence", "command": {"argv": ["/bin/sh", "-c", "kill -TERM $$"]}}]})
    assert run.result == "failed"
    assert steps[0].output.startswith("/bin/sh killed by SIGTERM")
