"""What a restarted daemon says, and does, about a drill the last one was killed during (the journal holds its
start and not its end: `Drills.recover`). It never moves a service on its own.

- A round trip ends `interrupted`, saying where the service was left and, when that is not where the drill
  started, the command that moves it back: whether to is an operator's decision (a leg may have been cut short).
- A runbook drill's cleanup steps run once, as a run of the drill (evidence `drill_cleanup`, steps in phase
  `cleanup`); then it ends `interrupted` saying how the cleanup went. The run is journaled before its first step
  runs (and synced to disk by it), so a daemon killed again finds it and does not run the cleanup twice.

Either way the drill counts as `interrupted` in `bcd_drills_total`: BcdDrillFailed fires.
"""

from __future__ import annotations

from collections.abc import Iterable

from bcd.model import RunResult
from bcd.run_records import RunRecord

KILLED = "the daemon was killed during it"


def runs_of(recent: Iterable[RunRecord], drill: str) -> list[RunRecord]:
    """The runs of `drill` among `recent`, oldest first."""
    return sorted((run for run in recent if run.evidence.get("drill") == drill), key=lambda run: run.id)


def cleanup_run(runs: Iterable[RunRecord]) -> RunRecord | None:
    """The run that carried out the drill's cleanup after a restart, if one was started."""
    return next((run for run in runs if run.evidence.get("drill_cleanup")), None)


def where_left(service: str, origin: str, active: str, home: str, runs: Iterable[RunRecord]) -> str:
    """Where a round trip left `service` (`active`, as journaled), and how to move it back to `origin`."""
    cut = [str(run.id) for run in runs if run.result is RunResult.INTERRUPTED]
    check = f"; run {', '.join(cut)} was cut short: check {service} at both sites" if cut else ""
    if active == origin:
        return f"{service} is active on {origin}, where the drill started{check}"
    command = "failback" if origin == home else "failover"
    return (f"{service} was left active on {active} (the drill started on {origin}){check}; nothing was moved "
            f"back automatically: to restore it, bcd {command} {service} --to {origin} --reason '…'")


def cleaned(run: RunRecord, earlier: bool = False) -> str:
    """How the cleanup after a restart went (`earlier`: it ran after an earlier restart, and not again now)."""
    when = "after an earlier restart" if earlier else "after the restart"
    if run.result is RunResult.SUCCEEDED:
        return f"its cleanup ran {when} (run {run.id}) and completed"
    how = "was cut short" if run.result in (RunResult.INTERRUPTED, RunResult.RUNNING) else "failed"
    again = ", not run again" if earlier else ""
    return f"its cleanup ran {when} (run {run.id}) and {how}{again}: finish it by hand (run {run.id}'s steps)"
