"""Approvals of a run waiting at an approval step: who approved so far, and whether the step may go on.

Whether a person may approve at all (role, scope, four eyes) is decided by `bcd.operations`; this only counts.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from bcd import events
from bcd.events import Event, EventKind
from bcd.runbooks.steps.base import ApprovalNeed


class ActiveRun(Protocol):
    """What of a run (bcd.runbooks.runner.ActiveRun) its approvals read and change."""

    id: int
    approval: asyncio.Future[str] | None
    need: ApprovalNeed | None
    approvals: list[str]
    waiting_step: str


def waiting(run: ActiveRun | None) -> bool:
    """Whether `run` waits for an approval it has not had yet."""
    return run is not None and run.approval is not None and not run.approval.done() and run.need is not None


def count(run: ActiveRun, service: str, by: str, reason: str, now: float) -> Event:
    """Count `by`'s approval of the step `run` waits on (which must be `waiting`); the step goes on once its need
    is met. Returns the `approval_given` event to journal."""
    assert run.approval is not None and run.need is not None
    run.approvals.append(by)
    event = Event(EventKind.APPROVAL_GIVEN, now, service, None, f"{by}: {reason or 'approved'}",
                  events.ApprovalGiven(run.id, run.waiting_step, by, tuple(run.approvals), run.need.approvers))
    if len(run.approvals) >= run.need.approvers:
        run.approval.set_result(", ".join(run.approvals))
    return event
