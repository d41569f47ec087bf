"""Config models of runbooks and their steps (parsed once, frozen, unknown keys rejected).

Each step kind's spec lives in its module under `steps/`; `Step` gets one optional key per kind of the step
table (`steps/registry.py`). Templates in steps: see `templates.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, cast

from pydantic import ConfigDict, Field, create_model, field_validator, model_validator
from pydantic.dataclasses import dataclass

from bcd.authority import Selector
from bcd.durations import Duration
from bcd.runbooks.steps.registry import KINDS
from bcd.runbooks.templates import Spec, check_templates
from bcd.specs import FORBID

STEP_KINDS = tuple(kind.name for kind in KINDS)
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Retry(Spec):
    attempts: int = Field(1, ge=1, le=20, description="total attempts, retrying only errors that may pass")
    wait: Duration = Field(2.0, description="base of the exponential backoff (full jitter)")
    max_wait: Duration = Field(60.0, description="longest single wait")


class StepBase(Spec):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    timeout: Duration | None = Field(None, description="per attempt; default 30s (approval/wait: their own)")
    retry: Retry = Field(default_factory=Retry)
    on_failure: Literal["abort", "continue"] = "abort"

    @model_validator(mode="after")
    def _one_kind(self) -> StepBase:
        given = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"a step needs exactly one of {', '.join(STEP_KINDS)}; got {len(given)}")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @property
    def spec(self) -> Spec:
        """The spec under the step's kind key (that kind's `StepPlugin.spec`)."""
        spec: Spec = getattr(self, self.kind)
        return spec


# What every step has, plus a `<kind>: <its spec> | None = None` field per kind of the step table, in its order.
if TYPE_CHECKING:
    Step = StepBase
else:
    Step = cast(type[StepBase], create_model(
        "Step", __base__=StepBase, __module__=__name__, **{kind.name: (kind.spec | None, None) for kind in KINDS}))


class Runbook(Spec):
    description: str = ""
    steps: Annotated[list[Step], Field(min_length=1)]
    rollback: list[Step] = Field([], description="run when a step fails with on_failure: abort, or on abort")
    cleanup: list[Step] = Field([], description="run after the steps (and rollback) whatever their outcome, also on "
                                                "abort: a drill runbook's teardown")

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
    role: Literal["viewer", "approver", "operator"] = Field(
        description="viewer: reads; approver: also approves and aborts runs; operator: also starts runs")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token (bcd token new)")]
    scope: Selector | None = Field(None, description="only the services whose labels match (default: all)")


class RunnerSettings(Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, title="Runner")

    max_concurrent_runs: int = Field(4, ge=1, le=100)
    kill_orphans: bool = Field(
        True, description="at start, terminate process groups that steps of a crashed run left running "
        "(false: only report them in the interrupted run)",
    )


Auth.model_rebuild()
