"""Who may do what: roles, scopes and the label selectors both use. A leaf module (pydantic only), so that
the config, the API and MQTT adapters and `bcd.operations` (where every decision is taken) share one meaning.

Roles are ordered: a `viewer` reads; an `approver` also approves and aborts runs; an `operator` also starts
runs, acknowledges and sets maintenance. A scope limits an actor to the services whose labels match it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import Field

from bcd.durations import Duration
from bcd.specs import Model


class Selector(Model):
    """Services by label: a service matches when it carries every label given, with the value given."""

    labels: Annotated[dict[str, str], Field(min_length=1, description="every one must match")]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.labels.items())

    def __str__(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in sorted(self.labels.items()))


class ApprovalGate(Selector):
    """`require_approval:` a failover of a matching service waits for an approval before its first step."""

    approvers: int = Field(1, ge=1, le=5, description="distinct people who must approve")
    distinct_from_initiator: bool = Field(False, description="the operator who started the run may not approve")
    timeout: Duration = Field(3600.0, description="no approval within this: the run fails")


class Role(IntEnum):
    ANONYMOUS = 0
    VIEWER = 1
    APPROVER = 2
    OPERATOR = 3

    @property
    def word(self) -> str:
        return self.name.lower()


ROLES = ("viewer", "approver", "operator")  # as written in the config


class Action(StrEnum):
    """What an actor asks to do, and the least role it needs (`NEEDS`)."""

    TRANSFER = "start a run"
    ACKNOWLEDGE = "acknowledge"
    MAINTENANCE = "set maintenance"
    APPROVE = "approve a run"
    ABORT = "abort a run"
    RELOAD = "reload the config"


NEEDS: Mapping[Action, Role] = {
    Action.TRANSFER: Role.OPERATOR, Action.ACKNOWLEDGE: Role.OPERATOR, Action.MAINTENANCE: Role.OPERATOR,
    Action.APPROVE: Role.APPROVER, Action.ABORT: Role.APPROVER, Action.RELOAD: Role.OPERATOR,
}


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks (`name`, as journaled), with which role, limited to which services (None: all of them)."""

    name: str
    role: Role
    scope: Selector | None = None

    def refusal(self, action: Action) -> str | None:
        """Why this actor may not do `action` at all, or None."""
        needed = NEEDS[action]
        if self.role >= needed:
            return None
        return f"{self.name} is {_a(self.role)}; this needs {_a(needed)}"

    def out_of_scope(self, service: str, labels: Mapping[str, str]) -> str | None:
        """Why this actor may not act on `service` (its labels), or None."""
        if self.scope is None or self.scope.matches(labels):
            return None
        return f"{self.name} may act only on services labelled {self.scope}; {service} is not"


def _a(role: Role) -> str:
    return f"{'an' if role.word[0] in 'aeiou' else 'a'} {role.word}"


TRUSTED = Actor("system", Role.OPERATOR)
"""The daemon itself and in-process callers (tests, the scheduler of booked runs): every action, everywhere."""
