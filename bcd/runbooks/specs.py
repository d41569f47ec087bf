"""Config models of runbooks and their steps (parsed once, frozen, unknown keys rejected).

Strings in steps may use the templates `{service}`, `{from_site}`, `{to_site}`, `{run_id}`, `{trigger}`
(and `{fence_token}`); anything else in braces is a config error. `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.dataclasses import dataclass

from bcd.credentials import CredentialFile
from bcd.durations import Duration
from bcd.specs import FORBID, absolute_argv

TEMPLATE_NAMES = frozenset({"service", "from_site", "to_site", "run_id", "trigger", "fence_token"})
RENDERED = {"rendered": True}
"""Validation context of a spec whose templates are already filled in: braces left in it are literal."""
STEP_KINDS = ("http", "command", "mqtt_publish", "wait_healthy", "sleep", "approval")
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def template_fields(text: str) -> Iterator[str]:
    """Names used as `{name}` in a template string; ValueError if the braces are malformed."""
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise ValueError(f"invalid template {{{name}}}: use one of {', '.join(sorted(TEMPLATE_NAMES))}")
        yield name


def check_templates(value: Any) -> None:
    """Raise ValueError naming the first unknown template in any string inside `value`."""
    if isinstance(value, str):
        try:
            unknown = [name for name in template_fields(value) if name not in TEMPLATE_NAMES]
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if unknown:
            raise ValueError(
                f"unknown template {{{unknown[0]}}}; known: {', '.join('{' + n + '}' for n in sorted(TEMPLATE_NAMES))}"
            )
    elif isinstance(value, dict):
        for item in value.values():
            check_templates(item)
    elif isinstance(value, list | tuple):
        for item in value:
            check_templates(item)


class Templated(Spec):
    @model_validator(mode="before")
    @classmethod
    def _templates(cls, data: Any, info: ValidationInfo) -> Any:
        if not (info.context or {}).get("rendered"):
            check_templates(data)
        return data


class HttpStep(Templated):
    """`http:` step: one request; 5xx and connection errors may be retried."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = {}
    body: str | None = None
    json_body: dict[str, Any] | None = Field(None, alias="json", description="JSON request body")
    expect_status: list[Annotated[int, Field(ge=100, le=599)]] | None = Field(None, description="default any 2xx")
    tls_verify: bool = True
    ca_file: CredentialFile | None = None


class CommandStep(Templated):
    """`command:` step: argv run without a shell; BCD_* variables describe the run."""

    argv: Annotated[list[str], Field(min_length=1)]
    env: dict[str, str] = {}
    retryable_exit_codes: list[int] = Field([], description="non-zero exit codes worth retrying")

    _absolute = field_validator("argv")(absolute_argv)


class MqttPublishStep(Templated):
    """`mqtt_publish:` step: one message through the broker of the `mqtt:` section (or `url`)."""

    topic: str
    payload: str = ""
    retain: bool = False
    qos: Literal[0, 1, 2] = 1
    url: str | None = Field(None, pattern=r"^mqtts?://", description="default: the mqtt section's url")


class WaitHealthyStep(Templated):
    """`wait_healthy:` step: wait until the service is `up` in `site`."""

    site: str
    within: Duration = 120.0


class SleepStep(Spec):
    duration: Duration


class ApprovalStep(Spec):
    """`approval:` step: wait for an operator's approve (API, CLI or MQTT)."""

    timeout: Duration = 900.0
    prompt: str = ""


class Retry(Spec):
    attempts: int = Field(1, ge=1, le=20, description="total attempts, retrying only errors that may pass")
    wait: Duration = Field(2.0, description="base of the exponential backoff (full jitter)")
    max_wait: Duration = Field(60.0, description="longest single wait")


class Step(Spec):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    timeout: Duration | None = Field(None, description="per attempt; default 30s (approval/wait: their own)")
    retry: Retry = Field(default_factory=Retry)
    on_failure: Literal["abort", "continue"] = "abort"
    http: HttpStep | None = None
    command: CommandStep | None = None
    mqtt_publish: MqttPublishStep | None = None
    wait_healthy: WaitHealthyStep | None = None
    sleep: SleepStep | None = None
    approval: ApprovalStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Step:
        given = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a step needs exactly one of {', '.join(STEP_KINDS)}; got {len(given)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> Spec:
        spec: Spec = getattr(self, self.kind)
        return spec


class Runbook(Spec):
    description: str = ""
    steps: Annotated[list[Step], Field(min_length=1)]
    rollback: list[Step] = Field([], description="run when a step fails with on_failure: abort, or on abort")

    @field_validator("description")
    @classmethod
    def _description_templates(cls, value: str) -> str:
        check_templates(value)
        return value


# one or two per service: a slotted dataclass like the probe specs (the docstring is the schema's description)
@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class Transfer:
    """How a service moves between sites: which runbook, how much automation, how often."""

    runbook: Annotated[str, Field(pattern=NAME)]
    mode: Literal["auto", "manual", "dry-run"] = "manual"
    cooldown: Duration = Field(1800.0, description="no automatic run sooner than this after the last one")


class Auth(Spec):
    tokens: list[Token] = []
    anonymous_read: bool = Field(False, description="read endpoints without a token")


class Token(Spec):
    name: Annotated[str, Field(pattern=NAME)]
    role: Literal["viewer", "operator"]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")]


class RunnerSettings(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, title="Runner")

    max_concurrent_runs: int = Field(4, ge=1, le=100)
    kill_orphans: bool = Field(
        True, description="at start, terminate process groups that steps of a crashed run left running "
        "(false: only report them in the interrupted run)",
    )


Auth.model_rebuild()
