"""What every alert receiver shares: the `Target` protocol its deliverer follows, the `ReceiverKind` it declares,
the POST with deadline and retries, the HMAC signature, and the delivery counters."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from bcd.health import FrozenMap
from bcd.lazy import lazy_import
from bcd.outputs.alert_rules import Alert

if TYPE_CHECKING:
    import aiohttp
    import structlog
else:  # loaded on first use: the config, which imports every receiver for its settings, needs neither
    aiohttp = lazy_import("aiohttp")
    structlog = lazy_import("structlog")  # with rich: a tenth of a second of every `bcd check-config`


def log() -> Any:
    """The alerts' logger (structlog's, so imported only once something is logged)."""
    return structlog.get_logger("bcd.alerts")

BACKOFF = 0.5
BACKOFF_MAX = 30.0

Key = FrozenMap[str]
SettingsT = TypeVar("SettingsT")


class DeliveryError(Exception):
    """A receiver did not take a notification."""


class ServerError(DeliveryError):
    """A 5xx answer: worth another try."""


class Rejected(DeliveryError):
    """Any other non-2xx answer, or a receiver that cannot be used: another try would not help."""


def receiver_label(kind: str, url: str) -> str:
    """`alertmanager:host:port` or `webhook:host:port` (never the path: it may carry a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{kind}:{host}:{port}"


def signature(secret: bytes, body: bytes) -> str:
    """The `X-Bcd-Signature` value: `sha256=` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], *,
               per_attempt: float, attempts: int) -> None:
    """POST `body`, each attempt within `per_attempt` seconds; retried on network errors, timeouts and 5xx with
    full-jitter backoff. Raises the last error when every attempt failed or the receiver refused (4xx)."""
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=BACKOFF, max=BACKOFF_MAX),
        # an explicit list of what is worth retrying: never CancelledError (tenacity#529)
        retry=retry_if_exception_type((aiohttp.ClientConnectionError, TimeoutError, ServerError)),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await _post_once(session, url, body, headers, per_attempt)


async def _post_once(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str],
                     per_attempt: float) -> None:
    async with asyncio.timeout(per_attempt), session.post(url, data=body, headers=headers,
                                                      allow_redirects=False) as response:
        if response.status < 300:
            return
        text = (await response.text(errors="replace"))[:200].strip()
        message = f"HTTP {response.status}: {text}" if text else f"HTTP {response.status}"
        if response.status >= 500:
            raise ServerError(message)
        raise Rejected(message)


def describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class AlertStats:
    """The alert sender's figures for /metrics: alerts firing by alertname, and per receiver label."""

    firing: Counter[str] = field(default_factory=Counter)  # alertname -> alerts firing now
    suppressed: Counter[str] = field(default_factory=Counter)  # alertname -> alerts held now (impacted_by)
    receivers: set[str] = field(default_factory=set)  # the labels of the receivers configured now
    notifications: Counter[tuple[str, str]] = field(default_factory=Counter)  # (receiver, success|failure)
    dropped: Counter[str] = field(default_factory=Counter)

    def retain(self, receivers: set[str]) -> None:
        self.receivers = receivers
        self.notifications = Counter({k: v for k, v in self.notifications.items() if k[0] in receivers})
        self.dropped = Counter({k: v for k, v in self.dropped.items() if k in receivers})


class Sender(Protocol):
    """What a receiver reads from the alert sender (`sender.AlertSender`)."""

    stats: AlertStats
    firing: dict[Key, Alert]

    @property
    def instance(self) -> str: ...

    def clock(self) -> float: ...

    def generator_url(self, alert: Alert) -> str: ...

    def headers(self) -> dict[str, str]: ...


class Target(Protocol):
    """One receiver: told about every change, delivers from its own task."""

    label: str

    def changed(self, fired: Sequence[Alert], resolved: Sequence[tuple[Alert, float]]) -> None:
        """Take note of what started firing and what resolved (never blocks: delivery is `run`'s job)."""
        ...

    def joined(self, firing: Sequence[Alert]) -> None:
        """Added by a reload while `firing` fire: take note of them as it needs."""
        ...

    def update(self, settings: Any) -> None:
        """Adopt this receiver's settings from a reloaded config (secrets read again)."""
        ...

    def resend(self) -> None:
        """The resend interval has passed (a state-based receiver posts every firing alert again)."""
        ...

    async def run(self, session: aiohttp.ClientSession) -> None: ...


@dataclass(frozen=True, slots=True)
class ReceiverKind(Generic[SettingsT]):
    """One kind of alert receiver, declared in its module (`alertmanager.py`, `webhook.py`) beside its settings
    model and listed in `registry.py`: its key under `alerts:` and that key's type and default (the config
    follows from them), the receivers a section names, and what delivers to one."""

    name: str
    """In the `receiver` label of metrics and logs: `<name>:host:port`."""
    key: str
    section: Any
    """The annotation of `alerts.<key>`, e.g. `list[Webhook]`."""
    default: Any
    """Its pydantic `Field` (the value when the key is absent)."""
    receivers: Callable[[Any], Iterable[tuple[str, SettingsT]]]
    """The section's receivers, each as (its URL, its settings)."""
    build: Callable[[str, SettingsT, Sender], Target]
    resend: Callable[[Any], float | None] = lambda section: None
    """How often the section wants `Target.resend()` (None: never)."""


class Receiver:
    """What every receiver shares: a wake-up event, the stats, and logging of failing/recovered."""

    def __init__(self, label: str, sender: Sender) -> None:
        self.label = label
        self.sender = sender
        self.wake = asyncio.Event()
        self.failing = False

    def succeeded(self) -> None:
        self.sender.stats.notifications[(self.label, "success")] += 1
        if self.failing:
            log().info("alert_receiver_recovered", receiver=self.label)
        self.failing = False

    def failed(self, exc: Exception, *, lost: int = 0) -> None:
        self.sender.stats.notifications[(self.label, "failure")] += 1
        if lost or not self.failing:
            log().warning("alert_delivery_failed", receiver=self.label, error=describe(exc), alerts_lost=lost)
        self.failing = True
