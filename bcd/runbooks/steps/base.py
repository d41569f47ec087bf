"""What every step kind shares: the protocol, the context a step runs in, its outcome and errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from bcd.model import SiteState

if TYPE_CHECKING:  # annotations only: the config, which imports every step kind, stays light
    import aiohttp

    from bcd.broker import BrokerLink

OUTPUT_LIMIT = 4096


class StepError(Exception):
    """A step did not do its job. `retryable` errors (connection errors, 5xx, exits marked retryable)
    may pass on their own and are retried with backoff; the others fail the step at once."""

    def __init__(self, message: str, *, retryable: bool = False, output: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.output = output


@dataclass(frozen=True, slots=True)
class StepOutcome:
    summary: str
    output: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalNeed:
    """What an approval step waits for: `approvers` different people, none of them the run's initiator when
    `distinct_from_initiator`."""

    prompt: str
    approvers: int = 1
    distinct_from_initiator: bool = False


@dataclass
class StepContext:
    """Everything a step may use; the runner builds one per run."""

    service: str
    run_id: int
    variables: dict[str, str]
    http: aiohttp.ClientSession
    site_state: Callable[[str], SiteState]
    wait_approval: Callable[[ApprovalNeed, float], Awaitable[str]]
    """Wait (at most the time given) until the need is met: who approved, as `a, b`."""
    broker: BrokerLink | None = None  # the `mqtt:` section's broker, for mqtt_publish steps
    extra: dict[str, Any] = field(default_factory=dict)
    process_started: Callable[[int, int], None] = field(default=lambda pgid, start: None)
    """A command step calls it with its child's process group and start time, to journal them."""


SpecT = TypeVar("SpecT")
SpecT_contra = TypeVar("SpecT_contra", contravariant=True)


class StepKind(Protocol[SpecT_contra]):
    """One kind of runbook step. `execute` gets the spec with templates already rendered."""

    @property
    def retry_timeouts(self) -> bool:
        """Whether a timed-out attempt may be retried (network calls: yes; commands: no)."""
        ...

    def default_timeout(self, spec: SpecT_contra) -> float: ...

    async def execute(self, spec: SpecT_contra, ctx: StepContext) -> StepOutcome:
        """Do the step once; raise StepError on failure. Cancellation must leave nothing running."""
        ...


@dataclass(frozen=True, slots=True)
class StepPlugin(Generic[SpecT]):
    """One step kind, declared at the end of its module (`KIND = StepPlugin("http", HttpStep, HttpKind())`) and
    listed in `registry.py`: the key of a step, the spec under that key, and what runs it (mypy checks that
    `kind` takes this spec)."""

    name: str
    spec: type[SpecT]
    kind: StepKind[SpecT]


def bounded(text: str, limit: int = OUTPUT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
