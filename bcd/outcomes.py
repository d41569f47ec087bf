"""What an operation answers (bcd.operations): Accepted, with what it did, or Refused, with a kind that each surface
maps to its own answer (the API to its HTTP status) and a readable reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bcd.journal import RunRecord
from bcd.model import Guard
from bcd.plans.model import PlanRun


class Refusal(StrEnum):
    FORBIDDEN = "forbidden"  # the actor's role or scope does not allow it (HTTP 403)
    NOT_FOUND = "not_found"  # no such service, site or run (HTTP 404)
    CONFLICT = "conflict"  # a guard of the policy, or the run is not in the state asked for (HTTP 409)
    UNAVAILABLE = "unavailable"  # the journal cannot be written, or the runner is not started (HTTP 503)
    INVALID = "invalid"  # a config reloaded that cannot be loaded: nothing changed (HTTP 422)


@dataclass(frozen=True, slots=True)
class Accepted:
    """Done: `detail` says what happened in a sentence; the rest is what the action produced."""

    detail: str
    run: RunRecord | None = None  # the run a transfer started
    runs: list[int] = field(default_factory=list)  # the runs an acknowledgement covered
    sites: list[str] = field(default_factory=list)  # the sites a maintenance start or end covered
    until: float | None = None  # when the maintenance started ends
    plan_run: PlanRun | None = None  # the plan run started, resumed or changed
    drill: dict[str, Any] | None = None  # the drill started (bcd.drills)
    booking: dict[str, Any] | None = None  # the booking made or cancelled (bcd.bookings, as JSON)


@dataclass(frozen=True, slots=True)
class Refused:
    kind: Refusal
    reason: str
    guard: Guard | None = None  # the policy's guard that refused a transfer
    problems: tuple[str, ...] = ()  # INVALID: what is wrong, one `FILE:LINE: path: message` each


Outcome = Accepted | Refused
