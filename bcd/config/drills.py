"""The `drills:` section: scheduled DR drills (`bcd.drills`), each naming a service and a kind, or a recovery plan
(`plan:`, drilled by `bcd.drills.plan`), a hold, a calendar expression (`bcd.calendar`) with its time zone, and
blackout periods in which no drill of the service (or the plan) starts.

Checked at load (errors, `FILE:LINE`): exactly one of service and plan, which exists (a plan drill takes no
kind), the expression parses and fires outside the
blackouts within `bcd.calendar.HORIZON_YEARS`, the time zone exists, each blackout reads `YYYY-MM-DD..YYYY-MM-DD`
(first day not after the last), and the service can be drilled that way (a round trip needs a failover and a
failback runbook; a runbook drill a `drill_runbook`). A service's `drill_runbook` must name a runbook.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, field_validator

from bcd import calendar
from bcd.durations import Duration, format_duration
from bcd.specs import Model

Problem = tuple[tuple[str | int, ...], str]
MAX_HOLD = 86400.0  # a drill that holds the standby longer than a day is a planned switchover, not a drill
KINDS = ("round_trip", "runbook")


def blackout(text: str) -> tuple[date, date]:
    """`2026-12-20..2027-01-04` as its first and last day (both included); ValueError otherwise."""
    first, sep, last = text.partition("..")
    try:
        if not sep:
            raise ValueError
        start, end = date.fromisoformat(first.strip()), date.fromisoformat(last.strip())
    except ValueError:
        raise ValueError(f"a blackout reads FIRST..LAST, e.g. 2026-12-20..2027-01-04; got {text!r}") from None
    if end < start:
        raise ValueError(f"blackout {text!r} ends before it starts")
    return start, end


class DrillConfig(Model):
    service: str | None = Field(None, description="the service drilled (or `plan`)")
    plan: str | None = Field(None, description="the recovery plan drilled (or `service`): moved, held, moved back")
    kind: Literal["round_trip", "runbook"] = Field(
        "round_trip", description="round_trip: to a standby and back; runbook: its drill_runbook, then cleanup")
    hold: Duration = Field(0.0, description="round_trip: how long to stay on the standby before failing back")
    at: str = Field(description="when, e.g. 'first Tuesday of Jan,Apr,Jul,Oct 02:00' (bcd.calendar)")
    timezone: str = Field("UTC", description="IANA zone of `at` and the blackouts, e.g. Europe/London")
    blackout: list[str] = Field([], description="no drill of this service on these days, e.g. "
                                                "['2026-12-20..2027-01-04']")
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "scheduled drill"

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        calendar.zone(value)
        return value

    @field_validator("at")
    @classmethod
    def _at(cls, value: str) -> str:
        calendar.parse(value)
        return value

    @field_validator("hold")
    @classmethod
    def _hold(cls, value: float) -> float:
        if not 0 <= value <= MAX_HOLD:
            raise ValueError(f"must be between 0s and {format_duration(MAX_HOLD)}")
        return value

    @field_validator("blackout")
    @classmethod
    def _blackout(cls, value: list[str]) -> list[str]:
        for text in value:
            blackout(text)
        return value

    @property
    def drill_kind(self) -> str:
        """What its events say: `plan` for a plan drill, else its kind."""
        return "plan" if self.plan is not None else self.kind

    def blackouts(self) -> list[tuple[date, date]]:
        return [blackout(text) for text in self.blackout]

    def in_blackout(self, moment: datetime) -> str | None:
        """The blackout (as written) that `moment`'s day, in the drill's time zone, falls in, or None."""
        day = moment.astimezone(calendar.zone(self.timezone)).date()
        return next((text for text, (first, last) in zip(self.blackout, self.blackouts(), strict=True)
                     if first <= day <= last), None)

    def next_start(self, after: datetime) -> datetime | None:
        """The first occurrence after `after` outside every blackout (None: none within the horizon)."""
        for start in calendar.parse(self.at).occurrences(after, calendar.zone(self.timezone)):
            if self.in_blackout(start) is None:
                return start
        return None


class ServiceConfig(Protocol):
    @property
    def failover(self) -> Any: ...

    @property
    def failback(self) -> Any: ...

    @property
    def drill_runbook(self) -> str | None: ...

    @property
    def sites(self) -> Mapping[str, Any]: ...


class Config(Protocol):
    @property
    def cluster(self) -> Any: ...

    @property
    def services(self) -> Mapping[str, ServiceConfig]: ...

    @property
    def runbooks(self) -> Mapping[str, Any]: ...

    @property
    def drills(self) -> Mapping[str, DrillConfig]: ...

    @property
    def plans(self) -> Mapping[str, Any]: ...


def unfit(service: ServiceConfig, kind: str) -> str | None:
    """Why `service`, as configured, cannot be drilled as `kind` (the drill would always be refused), or None.
    A round trip also needs a standby to go to, and a failback that is not automatic: the policy would move the
    service home on its own as soon as the first leg ended, before the drill does."""
    if kind == "runbook":
        if not service.drill_runbook:
            return "a runbook drill needs the service's drill_runbook"
        return None
    missing = [which for which in ("failover", "failback") if getattr(service, which) is None]
    if missing:
        return f"a round trip needs a {' and a '.join(missing)} runbook"
    if service.failback.mode == "auto":
        return ("its failback is automatic: the policy would move it home before the drill does (drill it with "
                "failback mode manual)")
    if len(service.sites) < 2:
        return "a round trip needs a standby site to move to"
    return None


def _clustered(config: Config) -> Iterator[Problem]:
    """A runbook drill is always refused on a cluster member (it moves nothing, so no lock orders it)."""
    if config.cluster is not None:
        for name, drill in config.drills.items():
            if drill.kind == "runbook":
                yield ("drills", name, "kind"), ("a runbook drill is not carried out on a cluster member "
                                                 "(use round_trip)")


def problems(config: Config, now: datetime) -> Iterator[Problem]:
    """Every drill checked against the config and the time `now`; every service's drill_runbook."""
    yield from _clustered(config)
    for name, service in config.services.items():
        if service.drill_runbook is not None and service.drill_runbook not in config.runbooks:
            yield ("services", name, "drill_runbook"), f"unknown runbook {service.drill_runbook!r}"
    for name, drill in config.drills.items():
        where: tuple[str | int, ...] = ("drills", name)
        yield from _target(config, drill, where)
        if drill.next_start(now) is None:
            yield (*where, "at"), (f"{drill.at!r} never fires outside the blackouts in the next "
                                   f"{calendar.HORIZON_YEARS} years")


def _target(config: Config, drill: DrillConfig, where: tuple[str | int, ...]) -> Iterator[Problem]:
    """What is wrong with what `drill` names: exactly one existing service (drillable as its kind) or plan."""
    if (drill.service is None) == (drill.plan is None):
        yield where, "name exactly one of service and plan"
    elif drill.plan is not None:
        if drill.plan not in config.plans:
            yield (*where, "plan"), f"unknown plan {drill.plan!r}"
        if "kind" in drill.model_fields_set:
            yield (*where, "kind"), "a plan drill takes no kind: it moves what the plan moves, then moves it back"
    elif (target := config.services.get(drill.service or "")) is None:
        yield (*where, "service"), f"unknown service {drill.service!r}"
    elif (why := unfit(target, drill.kind)) is not None:
        yield (*where, "kind"), f"{drill.service}: {why}"
