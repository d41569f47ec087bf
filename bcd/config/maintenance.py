"""The `maintenance:` section: named windows, one-off (`from` + `duration`) or repeating (`every` +
`duration`, see `bcd.calendar`), each putting some sites of some services in maintenance.

Checked at load (errors, `FILE:LINE`): the expression parses and fires within `bcd.calendar.HORIZON_YEARS`, the
time zone exists, a one-off window has not already ended, the sites and services exist, and a window does not
cover every site of a service it selects (that service would have no site outside maintenance) unless
`force: true`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import AliasChoices, Field, field_validator, model_validator

from bcd import calendar
from bcd.config.checks import undeclared_site
from bcd.config.plans import LabelSelector, ServiceConfig, selects
from bcd.durations import MAINTENANCE, Duration, format_duration
from bcd.specs import Model

Problem = tuple[tuple[str | int, ...], str]


class WindowConfig(Model):
    sites: Annotated[list[str], Field(min_length=1)] = Field(description="the sites that go in maintenance")
    services: Literal["all"] | Annotated[list[str], Field(min_length=1)] | LabelSelector = Field(
        "all", description="all, a list of services, or {labels: {key: value}}")
    every: str | None = Field(None, description="repeats: e.g. 'second Wednesday of each month 22:00'")
    start: datetime | None = Field(None, alias="from", description="one-off: local start, e.g. 2026-12-10T22:00")
    duration: Duration = Field(validation_alias=AliasChoices("duration", "for"), description="how long, e.g. 4h")
    timezone: str = Field("UTC", description="IANA zone of `every` and `from`, e.g. Europe/London")
    reason: Annotated[str, Field(min_length=1, max_length=500)] = Field(description="why, for the journal")
    force: bool = Field(False, strict=True, description="allow a window leaving a service no site outside it")

    model_config = Model.model_config | {"populate_by_name": True}

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        calendar.zone(value)
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        if value is not None:
            calendar.parse(value)
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: float) -> float:
        low, high = MAINTENANCE
        if not low <= value <= high:
            raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> WindowConfig:
        if (self.every is None) == (self.start is None):
            raise ValueError("a window needs either `every` (repeating) or `from` (one-off), not both")
        return self

    def first_start(self) -> datetime | None:
        """A one-off window's start, aware (a naive `from` is in the window's time zone)."""
        if self.start is None or self.start.tzinfo is not None:
            return self.start
        return self.start.replace(tzinfo=calendar.zone(self.timezone))

    def selects(self, name: str, service: ServiceConfig) -> bool:
        return selects(self.services, name, service)


class Config(Protocol):
    @property
    def sites(self) -> Mapping[str, Any]: ...

    @property
    def services(self) -> Mapping[str, ServiceConfig]: ...

    @property
    def maintenance(self) -> Mapping[str, WindowConfig]: ...


def problems(config: Config, now: datetime) -> Iterator[Problem]:
    """Every window checked against the config and the time `now`."""
    for name, window in config.maintenance.items():
        where: tuple[str | int, ...] = ("maintenance", name)
        for site in window.sites:
            if site not in config.sites:
                yield (*where, "sites"), undeclared_site(site)
        if isinstance(window.services, list):
            for unknown in window.services:
                if unknown not in config.services:
                    yield (*where, "services"), f"unknown service {unknown!r}"
        yield from _timing(where, window, now)
        if not window.force:
            for service_name, service in config.services.items():
                if window.selects(service_name, service) and set(service.sites) <= set(window.sites):
                    yield (*where, "sites"), (f"would leave {service_name} no site outside maintenance "
                                              f"({', '.join(service.sites)}); set force: true if that is meant")


def _timing(where: tuple[str | int, ...], window: WindowConfig, now: datetime) -> Iterator[Problem]:
    start = window.first_start()
    if start is not None:
        if start.timestamp() + window.duration <= now.timestamp():
            yield (*where, "from"), f"the window ended in the past ({start.isoformat()})"
    elif window.every is not None:
        try:
            calendar.parse(window.every).first_after(now, calendar.zone(window.timezone))
        except ValueError as exc:
            yield (*where, "every"), str(exc)
