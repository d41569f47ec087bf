"""Alerts at the edge: derive them from the live state, diff, and notify Alertmanager and webhooks.

`AlertSender` derives the alerts with the pure `alert_rules.active_alerts`: for the services named by bus
events as they come (bursts coalesced), and for every service every `FULL_EVERY` seconds, in slices (so
certificates that cross `cert_expiry_warn` are seen, and nothing depends on an event having been delivered).
What appears is firing, what disappears is resolved. Each receiver has its own task, so a receiver that is
slow or down never holds up the daemon, the other receivers, or the next evaluation.

- **Alertmanager** (API v2, `POST <url>/api/v2/alerts`): state-based. Every `resend` all firing alerts are
  posted with `endsAt = now + 4 x resend` (so Alertmanager resolves them by itself if bcd goes away); changes
  are posted as they happen. What has not been delivered yet waits in a bounded per-receiver table and goes
  with the next post, whatever the outcome of this one.
- **Webhooks**: change-based. One JSON object per change (`{"status": "firing"|"resolved", "alerts": [...]}`),
  signed with `X-Bcd-Signature: sha256=<HMAC-SHA256 of the body>`, delivered in order from a bounded queue;
  the oldest notification is dropped (and counted) when the queue is full.

Each POST has a deadline; failed posts are retried with jittered exponential backoff (tenacity), a bounded
number of times, and only on network errors, timeouts and 5xx answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol
from urllib.parse import quote, urlsplit

import aiohttp
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from bcd import __version__
from bcd.bus import Bus, Subscription
from bcd.config import AlertmanagerSettings, Config, Webhook, read_credential
from bcd.health import FrozenMap, SiteHealth
from bcd.outputs.alert_rules import (
    ALERTNAMES,
    Alert,
    AlertSnapshot,
    Certificate,
    FailedRun,
    ServiceFacts,
    WaitingRun,
    active_alerts,
    alert_object,
)
from bcd.view import EstateView

log = structlog.get_logger("bcd.alerts")

FULL_EVERY = 30.0
"""Re-derive every service this often even without events (certificates crossing cert_expiry_warn); between
times only the services named by bus events are looked at again."""
CHUNK = 200
"""Services derived per slice of a full pass (the event loop runs other work between slices)."""
EVALUATE_GAP = 0.05
"""At most one evaluation per gap: a burst of events costs one evaluation, not one each."""
MAX_PENDING = 10_000
"""Undelivered changes kept per Alertmanager (the oldest are dropped; endsAt resolves them anyway)."""
MAX_QUEUE = 1_000
"""Undelivered notifications kept per webhook (the oldest are dropped)."""
BACKOFF = 0.5
BACKOFF_MAX = 30.0
SIGNATURE_HEADER = "X-Bcd-Signature"
RUN_EVENTS = frozenset({"run_finished", "acknowledged"})

Key = FrozenMap[str]


class DeliveryError(Exception):
    """A receiver did not take a notification."""


class ServerError(DeliveryError):
    """A 5xx answer: worth another try."""


class Rejected(DeliveryError):
    """Any other non-2xx answer, or a receiver that cannot be used: another try would not help."""


RETRYABLE = (aiohttp.ClientConnectionError, TimeoutError, ServerError)


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
        retry=retry_if_exception_type(RETRYABLE),
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


@dataclass
class AlertStats:
    """Counters for /metrics, keyed by receiver label."""

    notifications: Counter[tuple[str, str]] = field(default_factory=Counter)  # (receiver, success|failure)
    dropped: Counter[str] = field(default_factory=Counter)

    def retain(self, receivers: set[str]) -> None:
        self.notifications = Counter({k: v for k, v in self.notifications.items() if k[0] in receivers})
        self.dropped = Counter({k: v for k, v in self.dropped.items() if k in receivers})


class Target(Protocol):
    """One receiver: told about every change, delivers from its own task."""

    label: str

    def changed(self, fired: Sequence[Alert], resolved: Sequence[tuple[Alert, float]]) -> None: ...

    async def run(self, session: aiohttp.ClientSession) -> None: ...


class _Receiver:
    """What both receivers share: a wake-up event, the stats, and logging of failing/recovered."""

    def __init__(self, label: str, sender: AlertSender) -> None:
        self.label = label
        self.sender = sender
        self.wake = asyncio.Event()
        self.failing = False

    def succeeded(self) -> None:
        self.sender.stats.notifications[(self.label, "success")] += 1
        if self.failing:
            log.info("alert_receiver_recovered", receiver=self.label)
        self.failing = False

    def failed(self, exc: Exception, *, lost: int = 0) -> None:
        self.sender.stats.notifications[(self.label, "failure")] += 1
        if lost or not self.failing:
            log.warning("alert_delivery_failed", receiver=self.label, error=describe(exc), alerts_lost=lost)
        self.failing = True


class AlertmanagerTarget(_Receiver):
    """One Alertmanager: posts changes as they happen and every firing alert every `resend`."""

    def __init__(self, url: str, settings: AlertmanagerSettings, sender: AlertSender) -> None:
        super().__init__(receiver_label("alertmanager", url), sender)
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.settings = settings
        self.pending: dict[Key, tuple[Alert, float | None]] = {}  # undelivered: (alert, resolved at | None)
        self.full = True  # the next post carries every firing alert

    def changed(self, fired: Sequence[Alert], resolved: Sequence[tuple[Alert, float]]) -> None:
        for alert in fired:
            self.pending.pop(alert.labels, None)  # keep insertion order = age
            self.pending[alert.labels] = (alert, None)
        for alert, at in resolved:
            self.pending.pop(alert.labels, None)
            self.pending[alert.labels] = (alert, at)
        while len(self.pending) > MAX_PENDING:
            del self.pending[next(iter(self.pending))]
            self.sender.stats.dropped[self.label] += 1
        self.wake.set()

    def resend(self) -> None:
        self.full = True
        self.wake.set()

    def payload(self, now: float) -> tuple[list[dict[str, object]], dict[Key, tuple[Alert, float | None]]]:
        """The alert objects of the next post, and the pending entries it delivers."""
        firing = self.sender.firing
        ends_at = now + 4 * self.settings.resend
        batch = dict(self.pending)
        keys = set(firing) if self.full else {key for key, (_, at) in batch.items() if at is None and key in firing}
        objects = [alert_object(firing[key], ends_at=ends_at, generator_url=self.sender.generator_url(firing[key]))
                   for key in sorted(keys, key=lambda k: sorted(k.items()))]
        objects.extend(
            alert_object(alert, ends_at=at, generator_url=self.sender.generator_url(alert))
            for key, (alert, at) in batch.items() if at is not None and key not in firing
        )
        return objects, batch

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            objects, batch = self.payload(self.sender.clock())
            full, self.full = self.full, False
            if not objects:
                continue
            body = json.dumps(objects, separators=(",", ":")).encode()
            try:
                await post(session, self.url, body, self.sender.headers(), per_attempt=self.settings.timeout,
                           attempts=self.settings.attempts)
            except Exception as exc:  # every failure is a value here: counted, logged, tried again later
                self.full = self.full or full
                self.failed(exc)
                continue
            self.succeeded()
            for key, entry in batch.items():
                if self.pending.get(key) is entry:  # unless it changed again meanwhile
                    del self.pending[key]


class WebhookTarget(_Receiver):
    """One webhook: every change as a signed JSON notification, delivered in order."""

    def __init__(self, settings: Webhook, sender: AlertSender) -> None:
        super().__init__(receiver_label("webhook", settings.url), sender)
        self.settings = settings
        self.secret: bytes | None = None
        self.secret_error: str | None = None
        self.queue: deque[bytes] = deque()
        self.load_secret()

    def load_secret(self) -> None:
        self.secret, self.secret_error = None, None
        if self.settings.secret_file is None:
            return
        try:
            self.secret = read_credential(self.settings.secret_file).encode()
        except (OSError, UnicodeDecodeError) as exc:
            self.secret_error = f"cannot read secret_file {self.settings.secret_file}: {describe(exc)}"
            log.error("webhook_secret_unreadable", receiver=self.label, error=self.secret_error)

    def changed(self, fired: Sequence[Alert], resolved: Sequence[tuple[Alert, float]]) -> None:
        if fired:
            self._enqueue("firing", [(alert, None) for alert in fired])
        if resolved:
            self._enqueue("resolved", list(resolved))

    def _enqueue(self, status: str, alerts: list[tuple[Alert, float | None]]) -> None:
        document = {
            "version": "1",
            "instance": self.sender.config.instance,
            "status": status,
            "alerts": [alert_object(alert, ends_at=at, generator_url=self.sender.generator_url(alert), status=status)
                       for alert, at in alerts],
        }
        if len(self.queue) >= MAX_QUEUE:
            self.queue.popleft()
            self.sender.stats.dropped[self.label] += 1
        self.queue.append(json.dumps(document, separators=(",", ":")).encode())
        self.wake.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                body = self.queue.popleft()
                try:
                    await self._deliver(session, body)
                except Exception as exc:  # counted and logged; the notification is lost after the last try
                    self.failed(exc, lost=len(json.loads(body)["alerts"]))
                else:
                    self.succeeded()

    async def _deliver(self, session: aiohttp.ClientSession, body: bytes) -> None:
        if self.secret_error is not None:
            raise Rejected(self.secret_error)
        headers = {**self.sender.headers()}
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        await post(session, self.settings.url, body, headers, per_attempt=self.settings.timeout,
                   attempts=self.settings.attempts)


def build_snapshot(estate: EstateView, names: Iterable[str], failed_run: Callable[[str], FailedRun | None],
                   ) -> AlertSnapshot:
    """What the alert rules look at for the services `names`, read from the estate view (and, through `failed_run`,
    the run journal). Costs O(sites + probes) of those services only."""
    config = estate.config
    services = []
    for name in names:
        service, view = config.services.get(name), estate.services.get(name)
        if service is None or view is None:
            continue
        sites: dict[str, SiteHealth] = {}
        certificates: list[Certificate] = []
        for site_name, site in service.sites.items():
            health = estate.sites.get((name, site_name))
            if health is not None:
                sites[site_name] = health
            for obs in estate.last_observations(name, site_name, site.probes):
                if obs.cert_expiry is not None:
                    certificates.append(Certificate(site_name, obs.key.probe, obs.cert_expiry))
        run = estate.run_in_progress(name)
        waiting = None if run is None or run.waiting_step is None else WaitingRun(
            run.id, str(run.kind), run.to_site, run.waiting_step)
        services.append(ServiceFacts(
            name=name, status=view.status, active=view.active, since=view.since, reason=view.reason,
            guard=view.guard, labels=service.labels, sites=sites, failed_run=failed_run(name),
            waiting_run=waiting, certificates=tuple(certificates),
        ))
    return AlertSnapshot(config.instance, services, config.alerts.cert_expiry_warn, config.alerts.runbook_url)


class AlertSender:
    """Derives the alerts and hands every change to the receivers. `start()`, `configure()` on reload,
    `await stop()`; `evaluate()` re-derives now."""

    def __init__(self, estate: EstateView, bus: Bus, config: Config,
                 clock: Callable[[], float] = time.time) -> None:
        self._estate = estate
        self._bus = bus
        self.config = config
        self.clock = clock
        self.firing: dict[Key, Alert] = {}
        self._by_service: dict[str, dict[Key, Alert]] = {}
        self._dirty: set[str] = set()
        self._full = True
        self.stats = AlertStats()
        self.targets: dict[tuple[str, str], Target] = {}
        self._target_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._subscription: Subscription | None = None
        self._wake = asyncio.Event()
        self._failed_runs: dict[str, FailedRun | None] = {}
        self._dropped_seen = 0
        self._listen_address = config.server.listen  # a reload does not move the server either
        self.configure(config)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Subscribe to the bus and start evaluating and delivering (needs a running loop)."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),  # each POST has its own deadline
            connector=aiohttp.TCPConnector(limit=32),
        )
        self._subscription = self._bus.subscribe("alerts", 1000)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(self._subscription)), loop.create_task(self._evaluate_loop())]
        for key in self.targets:
            self._start_target(key)
        self._wake.set()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._target_tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks, self._target_tasks = [], {}
        if self._subscription is not None:
            self._bus.unsubscribe(self._subscription)
            self._subscription = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def configure(self, config: Config) -> None:
        """Adopt a (re)loaded config: receivers added, removed or updated; secrets read again."""
        self.config = config
        settings = config.alerts
        wanted: dict[tuple[str, str], AlertmanagerSettings | Webhook] = {
            **{("alertmanager", url): settings.alertmanager for url in settings.alertmanager.urls},
            **{("webhook", hook.url): hook for hook in settings.webhooks},
        }
        for key in set(self.targets) - set(wanted):
            del self.targets[key]
            task = self._target_tasks.pop(key, None)
            if task is not None:
                task.cancel()
        for key, target_settings in wanted.items():
            target = self.targets.get(key)
            if isinstance(target, AlertmanagerTarget) and isinstance(target_settings, AlertmanagerSettings):
                target.settings = target_settings
            elif isinstance(target, WebhookTarget) and isinstance(target_settings, Webhook):
                target.settings = target_settings
                target.load_secret()
            else:
                self._add_target(key, target_settings)
        self.stats.retain({target.label for target in self.targets.values()})
        self._failed_runs.clear()
        self._full = True
        self._wake.set()

    def _add_target(self, key: tuple[str, str], settings: AlertmanagerSettings | Webhook) -> None:
        target: AlertmanagerTarget | WebhookTarget
        if isinstance(settings, AlertmanagerSettings):
            target = AlertmanagerTarget(key[1], settings, self)
        else:
            target = WebhookTarget(settings, self)
            if self.firing:  # a webhook added by a reload hears what already fires
                target.changed(list(self.firing.values()), [])
        self.targets[key] = target
        if self._session is not None:
            self._start_target(key)

    def _start_target(self, key: tuple[str, str]) -> None:
        assert self._session is not None
        target = self.targets[key]
        task = asyncio.get_running_loop().create_task(self._guard(target.label, target.run, self._session))
        self._target_tasks[key] = task

    @staticmethod
    async def _guard(label: str, run: Callable[[aiohttp.ClientSession], Awaitable[None]],
                     session: aiohttp.ClientSession) -> None:
        """Keep a receiver's task alive through a bug: log it and start its loop again."""
        while True:
            try:
                await run(session)
            except Exception:
                log.exception("alert_receiver_crashed", receiver=label)
                await asyncio.sleep(1.0)

    # -- evaluation ----------------------------------------------------------------------------------
    async def _listen(self, subscription: Subscription) -> None:
        async for event in subscription:
            if event.service is None:
                self._full = True
            else:
                self._dirty.add(event.service)
                if event.kind in RUN_EVENTS:
                    self._failed_runs.pop(event.service, None)
            self._wake.set()

    async def _evaluate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_resend = last_full = loop.time()
        while True:
            resend = self.config.alerts.alertmanager.resend
            wait = min(max(0.0, last_resend + resend - loop.time()), max(0.0, last_full + FULL_EVERY - loop.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            if loop.time() - last_full >= FULL_EVERY:
                last_full, self._full = loop.time(), True
            try:
                await self._evaluate_pending()
            except Exception:
                log.exception("alert_evaluation_failed")
            if loop.time() - last_resend >= resend:
                last_resend = loop.time()
                for target in self.targets.values():
                    if isinstance(target, AlertmanagerTarget):
                        target.resend()
            await asyncio.sleep(EVALUATE_GAP)  # rate limit: events arriving meanwhile share the next evaluation

    async def _evaluate_pending(self) -> None:
        if self._subscription is not None and self._subscription.dropped != self._dropped_seen:
            self._dropped_seen = self._subscription.dropped  # what the lost events said is unknown: look at all
            self._failed_runs.clear()
            self._full = True
        full, dirty = self._full, self._dirty
        self._full, self._dirty = False, set()
        if not full:
            if dirty:
                self.evaluate(dirty)
            return
        self.evaluate(())  # resolves the alerts of services a reload removed
        names = sorted(self._estate.config.services)
        for begin in range(0, len(names), CHUNK):  # a large estate in slices: the loop stays responsive
            self.evaluate(names[begin:begin + CHUNK])
            await asyncio.sleep(0)

    def evaluate(self, services: Iterable[str] | None = None) -> None:
        """Derive the alerts of `services` (default: every service) now; tell every receiver what started
        firing and what resolved. The alerts of services no longer configured resolve in any case."""
        now = self.clock()
        estate = self._estate
        configured = estate.config.services
        names = set(configured) if services is None else {name for name in services if name in configured}
        snapshot = build_snapshot(estate, sorted(names), self._failed_run)
        derived: dict[str, dict[Key, Alert]] = {name: {} for name in names}
        for alert in active_alerts(snapshot, now):
            derived[alert.service][alert.labels] = alert
        derived.update({name: {} for name in self._by_service if name not in configured})
        fired: list[Alert] = []
        resolved: list[tuple[Alert, float]] = []
        for name, alerts in derived.items():
            self._merge(name, alerts, now, fired, resolved)
        for alert in fired:
            log.info("alert_firing", alertname=alert.name, **_log_labels(alert))
        for alert, _ in resolved:
            log.info("alert_resolved", alertname=alert.name, **_log_labels(alert))
        if fired or resolved:
            for target in self.targets.values():
                target.changed(fired, resolved)

    def _merge(self, name: str, alerts: dict[Key, Alert], now: float, fired: list[Alert],
               resolved: list[tuple[Alert, float]]) -> None:
        """Adopt a service's newly derived alerts; note what started firing and what resolved."""
        known = self._by_service.get(name, {})
        for key, alert in alerts.items():
            if key in known:  # the same alert: it keeps its start, its annotations may have changed
                alerts[key] = replace(alert, starts_at=known[key].starts_at)
            else:
                fired.append(alert)
            self.firing[key] = alerts[key]
        for key, alert in known.items():
            if key not in alerts:
                resolved.append((alert, now))
                self.firing.pop(key, None)
        if alerts:
            self._by_service[name] = alerts
        else:
            self._by_service.pop(name, None)

    def _failed_run(self, service: str) -> FailedRun | None:
        """The service's unacknowledged failed run, cached until a run finishes or is acknowledged."""
        if service not in self._failed_runs:
            record = self._estate.unacknowledged_run(service)
            self._failed_runs[service] = None if record is None else FailedRun(
                record.id, record.runbook, record.kind, record.to_site, record.result, record.detail,
                record.ended if record.ended is not None else record.started,
            )
        return self._failed_runs[service]

    # -- helpers for the receivers -------------------------------------------------------------------
    def generator_url(self, alert: Alert) -> str:
        return f"http://{self._listen_address}/api/v1/services/{quote(alert.service, safe='')}"

    @staticmethod
    def headers() -> dict[str, str]:
        return {"Content-Type": "application/json", "User-Agent": f"bcd/{__version__}"}


def _log_labels(alert: Alert) -> dict[str, str]:
    names = ("service", "site", "probe", "severity", "guard")
    fields = {key: alert.labels[key] for key in names if key in alert.labels}
    return {**fields, "summary": alert.annotations["summary"]}


class AlertCollector(Collector):
    """`bcd_alerts_firing{alertname}`, `bcd_alert_notifications_total{receiver,result}`, and the drops."""

    def __init__(self, sender: AlertSender) -> None:
        self._sender = sender

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        sender = self._sender
        firing = GaugeMetricFamily("bcd_alerts_firing", "Alerts firing now, by alertname.", labels=["alertname"])
        counts = Counter(alert.name for alert in sender.firing.values())
        for name in ALERTNAMES:
            firing.add_metric([name], counts[name])
        yield firing
        notifications = CounterMetricFamily(
            "bcd_alert_notifications", "Deliveries to alert receivers (after retries), by result.",
            labels=["receiver", "result"],
        )
        dropped = CounterMetricFamily(
            "bcd_alert_notifications_dropped", "Alert changes dropped because a receiver's backlog was full.",
            labels=["receiver"],
        )
        labels = sorted({target.label for target in sender.targets.values()}
                        | {receiver for receiver, _ in sender.stats.notifications})
        for label in labels:
            for result in ("success", "failure"):
                notifications.add_metric([label, result], sender.stats.notifications[(label, result)])
            dropped.add_metric([label], sender.stats.dropped[label])
        yield notifications
        yield dropped
