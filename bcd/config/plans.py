"""The `plans:` section: recovery plans that move every service of a site in dependency order (`bcd.plans`).

The cross-checks against the rest of the config (sites, services, gates) are `problems()`, called by the
config's own cross-checks: a gate's group is checked against the largest estate the plan could take, every
selected service with a site `from` active there (groups depend on the estate at the run's start; a gate after a
group that even that estate cannot have is a mistake, and a gate after a group a smaller estate lacks is
passed over at run time).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field

from bcd import dependencies
from bcd.config.checks import undeclared_site
from bcd.durations import Duration
from bcd.specs import Model

Problem = tuple[tuple[str | int, ...], str]


class ServiceConfig(Protocol):
    """What a plan reads of a service's config (bcd.config.models.ServiceConfig)."""

    @property
    def labels(self) -> dict[str, str]: ...

    @property
    def sites(self) -> Mapping[str, Any]: ...

    @property
    def depends_on(self) -> list[str]: ...


class Config(Protocol):
    """What the plans' checks read of the whole config (bcd.config.models.Config)."""

    @property
    def sites(self) -> Mapping[str, Any]: ...

    @property
    def services(self) -> Mapping[str, ServiceConfig]: ...

    @property
    def plans(self) -> Mapping[str, PlanConfig]: ...


class LabelSelector(Model):
    labels: Annotated[dict[str, str], Field(min_length=1)] = Field(
        description="services whose labels include all of these")


class GateApproval(Model):
    timeout: Duration = Field(1800.0, description="the plan fails if nobody approves within this")


class Gate(Model):
    after_group: int = Field(ge=1, strict=True, description="an operator approves before the next group starts")
    approval: GateApproval = Field(default_factory=GateApproval)


class PlanConfig(Model):
    description: str = ""
    from_site: str = Field(alias="from", description="the site to leave: the services active there move")
    to_site: str = Field(alias="to", description="the site they move to")
    services: Literal["all"] | Annotated[list[str], Field(min_length=1)] | LabelSelector = Field(
        "all", description="all, a list of services, or {labels: {key: value}}")
    parallel: int = Field(4, ge=1, le=1000, strict=True, description="services moving at once within a group")
    gates: list[Gate] = []
    on_service_failure: Literal["continue", "stop"] = Field(
        "continue", description="continue: the failed service's dependents are skipped; stop: nothing else starts")
    trigger: Literal["manual", "auto"] = Field("manual", description="auto: starts when its `from` site is lost")
    objective: Duration | None = Field(None, description="the time the plan should take (shown beside its elapsed "
                                                         "time)")

    model_config = Model.model_config | {"populate_by_name": True}

    def selects(self, name: str, service: ServiceConfig) -> bool:
        """Whether `service` is one this plan covers (wherever it is active)."""
        return selects(self.services, name, service)

    def candidates(self, services: Mapping[str, ServiceConfig]) -> list[str]:
        """The selected services that have both sites of the plan (the others can never move with it)."""
        return [name for name, service in services.items()
                if self.selects(name, service) and self.from_site in service.sites and self.to_site in service.sites]


def selects(selector: Literal["all"] | list[str] | LabelSelector, name: str, service: ServiceConfig) -> bool:
    """Whether `services: all | [names] | {labels: …}` selects the service `name`."""
    if selector == "all":
        return True
    if isinstance(selector, list):
        return name in selector
    return all(service.labels.get(key) == value for key, value in selector.labels.items())


def problems(config: Config) -> Iterator[Problem]:
    """Every plan's references checked against the config: sites, services, gates."""
    for name, plan in config.plans.items():
        yield from _plan_problems(config, name, plan)


def _plan_problems(config: Config, name: str, plan: PlanConfig) -> Iterator[Problem]:
    where = ("plans", name)
    for key, site in (("from", plan.from_site), ("to", plan.to_site)):
        if site not in config.sites:
            yield (*where, key), undeclared_site(site)
    if plan.from_site == plan.to_site:
        yield (*where, "to"), f"a plan moves services away from {plan.from_site!r}: `to` must be another site"
    if isinstance(plan.services, list):
        for index, service in enumerate(plan.services):
            if service not in config.services:
                yield (*where, "services", index), f"unknown service {service!r}"
    if plan.from_site not in config.sites or plan.to_site not in config.sites:
        return
    graph = {service: config.services[service].depends_on for service in config.services}
    largest = dependencies.groups(graph, plan.candidates(config.services))
    for index, gate in enumerate(plan.gates):
        if gate.after_group >= len(largest):
            yield ((*where, "gates", index, "after_group"),
                   f"no group follows group {gate.after_group}: with every selected service active on "
                   f"{plan.from_site!r} this plan has {len(largest)} group(s)")


def plan_json(plan: PlanConfig) -> dict[str, Any]:
    """The plan as the API shows its config."""
    return plan.model_dump(mode="json", by_alias=True)
