"""What the daemon says, and does, about a drill it stopped during (a clean stop, or killed: then the next start
finds the drill started and not ended in the journal: `Drills.recover`). It never moves a service on its own.

- A round trip ends `interrupted`, saying where the service was left and, when that is not where the drill
  started, the command that moves it back: whether to is an operator's decision (a leg may have been cut short).
- A runbook drill is left unended by a stop, for the next start: its cleanup steps run once, as a run of the
  drill (evidence `drill_cleanup`, steps in phase `cleanup`, all of them even if the stopped run had begun them);
  then it ends `interrupted` saying how the cleanup went. That run is journaled before its first step runs (and
  synced to disk by it), so a daemon stopped again finds it and does not run the cleanup twice.

Either way the drill counts as `interrupted` in `bcd_drills_total`: BcdDrillFailed fires.
"""

from __future__ import annotations

from collections.abc import Iterable

from bcd.journal.run_records import RunRecord
from bcd.model import RunResult

STOPPED = "the daemon stopped during it"


CUT = (RunResult.INTERRUPTED, RunResult.RUNNING)  # a run the stop cut short (RUNNING: not marked yet)


def runs_of(recent: Iterable[RunRecord], drill: str) -> list[RunRecord]:
    """The runs of `drill` among `recent`, oldest first."""
    return sorted((run for run in recent if run.evidence.get("drill") == drill), key=lambda run: run.id)


def cleanup_run(runs: Iterable[RunRecord]) -> RunRecord | None:
    """The run that carried out the drill's cleanup after a restart, if one was started."""
    return next((run for run in runs if run.evidence.get("drill_cleanup")), None)


def where_left(service: str, origin: str, active: str, home: str, runs: Iterable[RunRecord]) -> str:
    """Where a round trip left `service` (`active`, as journaled), and how to move it back to `origin`."""
    cut = [str(run.id) for run in runs if run.result in CUT]
    check = f"; run {', '.join(cut)} was cut short: check {service} at both sites" if cut else ""
    if active == origin:
        return f"{service} is active on {origin}, where the drill started{check}"
    command = "failback" if origin == home else "failover"
    return (f"{service} was left active on {active} (the drill started on {origin}){check}; nothing was moved "
            f"back automatically: to restore it, bcd {command} {service} --to {origin} --reason '…'")


def cleaned(run: RunRecord, earlier: bool = False, again: bool = False) -> str:
    """How the cleanup after a restart went (`earlier`: it ran after an earlier restart, and not again now;
    `again`: the stopped run had begun it)."""
    when = f"after {'an earlier' if earlier else 'the'} restart (run {run.id}"
    when += "; all its steps, though the stopped run had begun them)" if again else ")"
    if run.result is RunResult.SUCCEEDED:
        return f"its cleanup ran {when} and completed"
    how = "was cut short" if run.result in CUT else "failed"
    return f"its cleanup ran {when} and {how}{', not run again' if earlier else ''}: finish it by hand " \
           f"(run {run.id}'s steps)"
