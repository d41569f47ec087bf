"""Acting on a verified MQTT command. (The operations layer of issue 12 will take this over.)"""

from __future__ import annotations

from bcd.engine import Engine, RequestRefused
from bcd.journal import JournalWriteError
from bcd.model import RunKind
from bcd.mqtt.commands import Command, CommandAction
from bcd.policy import Request


async def execute(engine: Engine, command: Command) -> tuple[bool, str]:
    """Carry out a verified command: (accepted, what happened or why not). Never raises for a refusal.
    A failover/failback goes through `engine.submit()`, so on a cluster member it first takes the service's
    lock in etcd (refused when another instance holds it or coordination is unavailable). While the journal
    cannot be written every action is refused with the journal's reason, as the API's 503 says."""
    try:
        return await _execute(engine, command)
    except JournalWriteError as exc:
        return False, str(exc)


async def _execute(engine: Engine, command: Command) -> tuple[bool, str]:
    by = f"mqtt:{command.by}"
    if command.service is not None and command.service not in engine.services:
        return False, f"no service named {command.service!r}"
    if command.action in (CommandAction.FAILOVER, CommandAction.FAILBACK):
        assert command.service is not None
        kind = RunKind.FAILOVER if command.action is CommandAction.FAILOVER else RunKind.FAILBACK
        try:
            run = await engine.submit(command.service, Request(kind, command.to), by, command.reason or str(kind))
        except RequestRefused as exc:
            return False, exc.verdict.reason
        return True, f"run {run.id}: {kind} of {command.service} to {run.request.to_site}"
    if command.action is CommandAction.ACK:
        assert command.service is not None
        ids = engine.acknowledge(command.service, by, command.reason or "acknowledged")
        return True, f"acknowledged runs {ids}" if ids else "nothing to acknowledge"
    if command.action is CommandAction.MAINTENANCE:
        assert command.service is not None
        try:
            if command.end:
                sites = engine.end_maintenance(command.service, command.site, by)
                return True, f"maintenance ended for {', '.join(sites) or 'no site'}"
            assert command.duration is not None
            sites = engine.start_maintenance(command.service, command.site, command.duration,
                                             command.reason or "maintenance", by)
        except KeyError as exc:
            return False, str(exc.args[0]) if exc.args else "unknown site"
        return True, f"maintenance of {', '.join(sites)} for {command.duration:g}s"
    return _control(engine, command, by)


def _control(engine: Engine, command: Command, by: str) -> tuple[bool, str]:
    assert command.run is not None
    record = engine.runs.get(command.run)
    if record is None:
        return False, f"no run {command.run}"
    if command.service is not None and record.service != command.service:
        return False, f"run {command.run} belongs to {record.service}, not {command.service}"
    runner = engine.runner
    if runner is None:
        return False, "the runner is not started"
    if command.action is CommandAction.APPROVE:
        if runner.approve(command.run, by):
            return True, f"run {command.run} approved"
        return False, f"run {command.run} is not waiting for approval"
    if runner.abort(command.run, by):
        return True, f"run {command.run} aborted"
    return False, f"run {command.run} is not in progress"

