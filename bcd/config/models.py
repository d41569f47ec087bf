"""The configuration's models: parsed once, frozen, unknown keys rejected (`loader.py` reads the file)."""

from __future__ import annotations

import functools
import os
import re
import socket
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import ConfigDict, Field, PrivateAttr, create_model, field_validator, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from bcd.authority import ApprovalGate
from bcd.config.checks import problems as cross_problems
from bcd.config.drills import DrillConfig
from bcd.config.drills import problems as drill_problems
from bcd.config.includes import INCLUDABLE
from bcd.config.maintenance import WindowConfig
from bcd.config.maintenance import problems as window_problems
from bcd.config.mqtt import MqttSettings
from bcd.config.plans import PlanConfig
from bcd.config.plans import problems as plan_problems
from bcd.credentials import CredentialFile
from bcd.durations import Duration
from bcd.outputs.alerts.registry import RECEIVERS
from bcd.probes.registry import KINDS as PROBE_KINDS
from bcd.runbooks.specs import Auth, Runbook, RunnerSettings, Transfer
from bcd.specs import FORBID, SHARED_EMPTY, Model

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_TARGET_SITE_GRACE = 60.0  # seconds: a failover waits this long at worst for a live but idle target site
Name = Annotated[str, Field(pattern=NAME, max_length=64)]


# TimingOverrides, ProbeConfig, ServiceSite and ServiceConfig exist once per probe or service (tens of thousands):
# frozen, slotted pydantic dataclasses like the probe specs, a quarter of the memory of BaseModels. The rest stay
# models.
@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class TimingOverrides:
    """Probe timing and thresholds; every field may be left to the level above."""

    interval: Duration | None = Field(None, description="time between two runs of a probe")
    timeout: Duration | None = Field(None, description="deadline of one probe run (< interval)")
    rise: int | None = Field(None, ge=1, le=100, strict=True, description="consecutive successes to become up")
    fall: int | None = Field(None, ge=1, le=100, strict=True, description="consecutive failures to become down")
    fast_interval: Duration | None = Field(
        None, description="time between runs while a failure is being confirmed (> timeout; = interval: off)")


FAST_FLOOR = 1.0  # the default fast_interval is this or timeout + FAST_MARGIN, whichever is longer
FAST_MARGIN = 0.5


@functools.lru_cache(maxsize=256)
def effective_fast_interval(interval: float, timeout: float, given: float | None) -> float:
    """The effective fast_interval: as given, else 1 s or timeout + 500 ms, whichever is longer, but never
    longer than the interval (where it equals the interval, fast confirmation is off). Cached: probes with
    the same timing share one float (24 bytes a probe otherwise, kept by the scheduler's jobs)."""
    if given is not None:
        return given
    return min(interval, max(FAST_FLOOR, timeout + FAST_MARGIN))


@dataclass(frozen=True, slots=True)
class Timing:
    """The effective interval, timeout, rise, fall and fast_interval of one probe (see `Config.timing`)."""

    interval: float
    timeout: float
    rise: int
    fall: int
    fast_interval: float


@dataclass(frozen=True, slots=True)
class BurstRules:
    """When to re-probe a whole site at once (`bcd.bursts`): first failures of `failures` services there within
    `window` seconds, at most once per `gap` seconds (0 failures: never)."""

    failures: int
    window: float
    gap: float


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class Objectives:
    """A service's recovery objectives: how long it may take to be served again (RTO) and how much recent
    data it may lose (RPO). Either may be left out (no objective)."""

    rto: Duration | None = Field(default=None, description="recovery time objective: first failure to served again")
    rpo: Duration | None = Field(default=None, description="recovery point objective: most data lag a failover accepts")


class Defaults(Model):
    objectives: Objectives = Field(Objectives(), description="for services that set none")
    drills_max_age: Duration = Field(365 * 86400.0, description="a service not drilled this long is overdue")
    interval: Duration = 10.0
    timeout: Duration = 3.0
    rise: int = Field(2, ge=1, le=100, strict=True)
    fall: int = Field(3, ge=1, le=100, strict=True)
    fast_interval: Duration | None = Field(
        None, description="time between runs while a failure is being confirmed; default 1s or timeout + 500ms, "
        "whichever is longer (at most interval; = interval turns fast confirmation off)")


class Flapping(Model):
    """Nagios-style flap detection: weighted percent state change over the last 21 results."""

    high: float = Field(30.0, gt=0, le=100, description="start flapping above this percentage")
    low: float = Field(25.0, ge=0, le=100, description="stop flapping below this percentage")

    @model_validator(mode="after")
    def _order(self) -> Flapping:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class Server(Model):
    listen: str = Field("127.0.0.1:9847", description="host:port of the HTTP server ([::1]:port for IPv6)")
    allowed_hosts: tuple[Annotated[str, Field(min_length=1, max_length=255)], ...] | None = Field(
        None, description="Host header values answered (name, or name:port); others get 421. Default: the listen "
        "host, localhost, 127.0.0.1, [::1] and any IP address (DNS rebinding needs a name)")
    max_connections: int = Field(256, ge=1, le=65536, description="open connections at once; more are closed")
    idle_timeout: Duration = Field(15.0, description="an idle kept-alive connection is closed after this")
    request_timeout: Duration = Field(10.0, description="a request's head and body must have come within this")

    @property
    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)

    @field_validator("listen")
    @classmethod
    def _parse(cls, listen: str) -> str:
        split_listen(listen)
        return listen


class SchedulerSettings(Model):
    model_config = ConfigDict(title="Scheduler")
    max_concurrency: int = Field(1000, ge=1, description="probes in flight at once, all services together")
    burst_failures: int = Field(
        2, ge=0, strict=True, description="first failures of this many services at one site within burst_window "
        "re-run every probe of that site at once (at most once per defaults' interval); 0 turns it off")
    burst_window: Duration = Field(2.0, description="see burst_failures")


class SiteInfo(Model):
    description: str = ""


KINDS = tuple(kind.name for kind in PROBE_KINDS)


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class ProbeBase(TimingOverrides):
    """What every configured probe has; `ProbeConfig` adds one optional key per kind of the probe registry."""

    name: Name

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeBase:
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a probe needs exactly one of {', '.join(KINDS)}; got {len(given)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> Any:
        """The spec under the probe's kind key (that kind's `ProbeKind.spec`)."""
        return getattr(self, self.kind)


def _probe_config() -> type[ProbeBase]:
    """ProbeBase with a `<kind>: <its spec> | None = None` field per probe kind of the registry, in its order."""
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": "ProbeConfig",
        "__annotations__": {kind.name: kind.spec | None for kind in PROBE_KINDS},
        **{kind.name: None for kind in PROBE_KINDS},
    }
    cls = type("ProbeConfig", (ProbeBase,), namespace)
    return cast(type[ProbeBase], pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)(cls))


if TYPE_CHECKING:
    ProbeConfig = ProbeBase
else:
    ProbeConfig = _probe_config()


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class DataLagRef:
    """Which measured value says how far a site's data trails (seconds), for the `rpo_exceeded` guard."""

    probe: Name = Field(description="one of this site's probes (command or http)")
    value: Annotated[str, Field(min_length=1, max_length=128)] = Field(
        description="a perfdata label of the command probe, or a json_values name of the http probe")


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class ServiceSite:
    probes: Annotated[list[ProbeConfig], Field(min_length=1)]
    data_lag: DataLagRef | None = Field(None, description="the probe value measuring how far this site's data "
                                                          "trails: a failover here is blocked beyond the rpo")

    @model_validator(mode="after")
    def _unique(self) -> ServiceSite:
        seen: set[str] = set()
        for probe in self.probes:
            if probe.name in seen:
                raise ValueError(f"probe name {probe.name!r} is used twice")
            seen.add(probe.name)
        return self

    @model_validator(mode="after")
    def _data_lag_known(self) -> ServiceSite:
        ref = self.data_lag
        if ref is None:
            return self
        probe = next((probe for probe in self.probes if probe.name == ref.probe), None)
        if probe is None:
            loc, message = ("data_lag", "probe"), f"unknown probe {ref.probe!r} (not one of this site's probes)"
        elif probe.kind == "http" and ref.value not in probe.spec.json_values:
            loc, message = ("data_lag", "value"), f"probe {ref.probe!r} has no json_values name {ref.value!r}"
        elif probe.kind not in ("http", "command"):
            loc, message = ("data_lag", "probe"), f"a {probe.kind} probe measures no value (command or http)"
        else:
            return self
        raise PydanticCustomError("cross_check", "{summary}", {"summary": ".".join(loc) + f": {message}",
                                                               "problems": [(loc, message)]})


@pydantic_dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class ServiceConfig(TimingOverrides):
    description: str = ""
    active: Name = Field(description="the site that serves today (its home); the others are standby")
    labels: Annotated[dict[str, str], SHARED_EMPTY] = Field(
        {}, validate_default=True, description="copied onto alerts, MQTT state and API objects")
    failover: Transfer | None = Field(None, description="runbook and mode for moving away from the active site")
    failback: Transfer | None = Field(None, description="runbook and mode for moving back home")
    objectives: Objectives = Field(Objectives(),
                                   description="RTO and RPO; each left out is the one under defaults:")
    depends_on: Annotated[list[Name], SHARED_EMPTY] = Field(
        [], validate_default=True, description="services this one needs: they move first, and while one of "
                                               "them is down at a site it is paged as the root cause")
    drill_runbook: Name | None = Field(None, description="the runbook of a drill of kind runbook (then its cleanup)")
    sites: Annotated[dict[Name, ServiceSite], Field(min_length=1)]

    @model_validator(mode="after")
    def _active_declared(self) -> ServiceConfig:
        if self.active not in self.sites:
            message = f"active site {self.active!r} is not one of this service's sites"
            raise PydanticCustomError("cross_check", "{summary}", {"summary": f"active: {message}",
                                                                   "problems": [(("active",), message)]})
        return self


def _runbook_url(template: str | None) -> str | None:
    if template is None:
        return None
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad template: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or spec or conversion:
            raise ValueError(f"placeholders must be label names such as {{alertname}}, got {{{name}}}")
    return template


def _alerts() -> type[Model]:
    """The `alerts:` section: one key per receiver kind of the table (`alerts.alertmanager`, `alerts.webhooks`),
    in its order, then what every receiver shares."""
    receivers: dict[str, Any] = {kind.key: (kind.section, kind.default) for kind in RECEIVERS}
    return cast(type[Model], create_model(
        "Alerts", __config__=Model.model_config, __module__=__name__,
        __doc__="Alerts derived from the live state, sent to Alertmanager and/or webhooks.",
        __validators__={"_template": field_validator("runbook_url")(_runbook_url)},
        **receivers,
        runbook_url=(str | None, Field(None, description="runbook_url annotation; {alertname}, {service}… filled in")),
        cert_expiry_warn=(Duration, Field(14 * 86400.0, description="BcdCertificateExpiring below this time left")),
    ))


if TYPE_CHECKING:
    class Alerts(Model):
        """The receivers' sections are read through the table: `getattr(alerts, kind.key)`."""

        runbook_url: str | None
        cert_expiry_warn: float

        def __init__(self) -> None: ...
else:
    Alerts = _alerts()


class EtcdSettings(Model):
    endpoints: Annotated[list[Annotated[str, Field(pattern=r"^https?://")]], Field(min_length=1)]
    ca_file: CredentialFile | None = Field(None, description="relative to $CREDENTIALS_DIRECTORY unless absolute")
    cert_file: CredentialFile | None = None
    key_file: CredentialFile | None = None


class Cluster(Model):
    """One bcd per data centre (plus a witness), coordinated through etcd: quorum before failover,
    exactly one executor per run. Without this section bcd runs alone with a local lock."""

    name: Annotated[str, Field(pattern=NAME)]
    etcd: EtcdSettings
    lease_ttl: Duration = Field(10.0, description="our lease; views and locks vanish this long after we die")
    keepalive: Duration | None = Field(None, description="lease keepalive interval; default lease_ttl / 3")
    call_timeout: Duration = Field(1.0, description="deadline of one etcd call, all endpoints together")
    full_read_every: Duration = Field(30.0, gt=0, description="besides the watch, read every cluster key this often "
                                                             "(a safety net)")
    quorum: Literal["majority", "all"] | Annotated[int, Field(ge=1)] = Field(
        "majority", description="how many live vantages must see the active site down")
    executor: bool = Field(True, strict=True, description="take service locks and run runbooks (false: a witness "
                                                          "that only votes and publishes its view)")
    prefer_target_site: bool = Field(True, strict=True, description="the executing instance in a run's target "
                                                                    "site runs it while it is live")
    target_site_grace: Duration = Field(10.0, description="how long the other executing instances wait for the "
                                                          "target site's before taking the lock themselves")

    @property
    def keepalive_interval(self) -> float:
        return self.keepalive if self.keepalive is not None else self.lease_ttl / 3

    @field_validator("target_site_grace")
    @classmethod
    def _short_grace(cls, value: float) -> float:
        if value > MAX_TARGET_SITE_GRACE:
            raise ValueError(f"must be at most {MAX_TARGET_SITE_GRACE:g}s (a failover waits this long when the "
                             f"target site's instance is live but does not act); got {value:g}s")
        return value

    @model_validator(mode="after")
    def _timing(self) -> Cluster:
        if self.keepalive_interval + 2 * self.call_timeout > self.lease_ttl:
            raise ValueError(
                f"keepalive ({self.keepalive_interval:g}s) + 2 x call_timeout ({self.call_timeout:g}s) must not exceed "
                f"lease_ttl ({self.lease_ttl:g}s): the lease could expire between two keepalives"
            )
        return self


class JournalSettings(Model):
    keep: Duration | None = Field(None, ge=86400.0, description="prune journal entries older than this (at least "
                                  "1d); a checkpoint keeps what remains verifiable. Runs and steps are kept")


class BookingSettings(Model):
    grace: Duration = Field(300.0, le=86400.0, description="a booked run whose time passed while no instance ran "
                            "starts late within this; later it is marked missed (not run)")


class Config(Model):
    instance: Name = Field(default_factory=lambda: socket.gethostname().split(".")[0] or "bcd")
    vantage: Name | None = Field(None, description="the site this daemon runs in")
    state_dir: str = Field(
        default_factory=lambda: os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "./var",
        description="where the SQLite state and journal live",
    )
    server: Server = Field(default_factory=Server)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    sites: Annotated[dict[Name, SiteInfo], Field(min_length=1)]
    defaults: Defaults = Field(default_factory=Defaults)
    flapping: Flapping = Field(default_factory=Flapping)
    services: dict[Name, ServiceConfig] = {}
    runbooks: dict[Name, Runbook] = {}
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    auth: Auth = Field(default_factory=Auth)
    require_approval: ApprovalGate | None = Field(
        None, description="a failover of a service with these labels waits for an approval before its first step")
    mqtt: MqttSettings | None = None
    alerts: Alerts = Field(default_factory=Alerts)
    cluster: Cluster | None = Field(None, description="run as one of several instances sharing etcd")
    plans: dict[Name, PlanConfig] = Field({}, description="recovery plans: move a site's services in order")
    journal: JournalSettings = Field(default_factory=JournalSettings)
    bookings: BookingSettings = Field(default_factory=BookingSettings, description="booked runs (bcd bookings)")
    include: list[Annotated[str, Field(min_length=1)]] = Field(
        [], description="more files (paths or globs, relative to this file; each glob's matches sorted) adding "
                        "services, runbooks, plans and maintenance: shaped as $defs.IncludedFile")
    maintenance: dict[Name, WindowConfig] = Field({}, description="maintenance windows: one-off or repeating")
    drills: dict[Name, DrillConfig] = Field({}, description="scheduled DR drills (bcd.drills)")
    _secrets: frozenset[str] = PrivateAttr(default=frozenset())
    _warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def secrets(self) -> frozenset[str]:
        """Values that came from ${ENV} references: masked wherever inputs are journaled or shown."""
        return self._secrets

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop the config from loading (FILE:LINE: path: warning: …)."""
        return self._warnings

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        # Each problem keeps its own location as a tuple (names may contain dots or be all digits).
        problems = [*cross_problems(self), *plan_problems(self), *window_problems(self, datetime.now(UTC)),
                    *drill_problems(self, datetime.now(UTC))]
        if problems:
            summary = "; ".join(".".join(map(str, loc)) + ": " + message for loc, message in problems)
            raise PydanticCustomError("cross_check", "{summary}", {"summary": summary, "problems": problems})
        return self

    def objectives(self, service_name: str) -> Objectives:
        """The service's effective objectives: each one it leaves out is the defaults'."""
        own, default = self.services[service_name].objectives, self.defaults.objectives
        return Objectives(rto=own.rto if own.rto is not None else default.rto,
                          rpo=own.rpo if own.rpo is not None else default.rpo)

    @property
    def bursts(self) -> BurstRules:
        """`scheduler.burst_failures` and `burst_window`; at most one burst per site per the defaults' interval, so
        bursts add at most one run per probe and interval (rarer than the issue's once per fast_interval: at
        once per second, a site's bursts alone could multiply its load by interval / fast_interval)."""
        settings = self.scheduler
        return BurstRules(settings.burst_failures, settings.burst_window, self.defaults.interval)

    def all_probes(self) -> Iterator[tuple[str, str, ProbeConfig]]:
        for service_name, service in self.services.items():
            for site_name, site in service.sites.items():
                for probe in site.probes:
                    yield service_name, site_name, probe

    def timing(self, service_name: str, probe: ProbeConfig) -> Timing:
        """Effective interval/timeout/rise/fall/fast_interval of a probe: probe, else service, else defaults
        (fast_interval: else derived from the effective interval and timeout)."""
        service = self.services[service_name]
        values: dict[str, Any] = {}
        for name in ("interval", "timeout", "rise", "fall", "fast_interval"):
            for level in (probe, service):
                if getattr(level, name) is not None:
                    values[name] = getattr(level, name)
                    break
            else:
                values[name] = getattr(self.defaults, name)
        interval, timeout = values["interval"], values["timeout"]
        values["fast_interval"] = effective_fast_interval(interval, timeout, values["fast_interval"])
        return Timing(**values)


def split_listen(listen: str) -> tuple[str, int]:
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", listen)
    if not match:
        raise ValueError(f"listen must be host:port or [ipv6]:port, got {listen!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


class _SchemaNames(GenerateJsonSchema):
    """Keeps the schema's definition names as they were before the settings models were renamed."""

    RENAMED = {"SchedulerSettings": "Scheduler", "RunnerSettings": "Runner"}

    def normalize_name(self, name: str) -> str:
        return self.RENAMED.get(name) or super().normalize_name(name)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (`bcd schema`), with the shape of an included file as IncludedFile."""
    schema = Config.model_json_schema(schema_generator=_SchemaNames)
    schema["$defs"]["IncludedFile"] = {
        "type": "object", "additionalProperties": False, "title": "IncludedFile",
        "description": "a file named by `include`: these sections only, entries as in the main file",
        "properties": {name: schema["properties"][name] for name in INCLUDABLE if name in schema["properties"]}}
    return schema
