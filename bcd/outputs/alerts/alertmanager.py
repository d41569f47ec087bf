"""Alertmanager (API v2, `POST <url>/api/v2/alerts`): state-based. Every `resend` all firing alerts are posted
with `endsAt = now + 4 x resend` (so Alertmanager resolves them by itself if bcd goes away); changes are posted
as they happen. What has not been delivered yet waits in a bounded per-receiver table and goes with the next
post, whatever the outcome of this one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator

from bcd.durations import Duration
from bcd.outputs.alert_rules import Alert, alert_object
from bcd.outputs.alerts.delivery import Key, Receiver, ReceiverKind, Sender, post, receiver_label
from bcd.specs import Model, positive

if TYPE_CHECKING:
    import aiohttp

MAX_PENDING = 10_000
"""Undelivered changes kept per Alertmanager (the oldest are dropped; endsAt resolves them anyway)."""


class AlertmanagerSettings(Model):
    """Alertmanager API v2 receivers: every firing alert is posted to each URL every `resend`."""

    urls: list[Annotated[str, Field(pattern=r"^https?://[^/]+")]] = Field(
        [], description="base URLs such as http://127.0.0.1:9093 (alerts go to <url>/api/v2/alerts)"
    )
    resend: Duration = Field(60.0, description="re-send firing alerts this often (endsAt = now + 4 x resend)")
    timeout: Duration = Field(10.0, description="deadline of one POST")
    attempts: int = Field(3, ge=1, le=20, description="tries per delivery (jittered backoff, 5xx and network errors)")

    _positive = field_validator("resend", "timeout")(positive)


class AlertmanagerTarget(Receiver):
    """One Alertmanager: posts changes as they happen and every firing alert every `resend`."""

    def __init__(self, url: str, settings: AlertmanagerSettings, sender: Sender) -> None:
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

    def joined(self, firing: Sequence[Alert]) -> None:
        pass  # its first post carries every firing alert

    def update(self, settings: AlertmanagerSettings) -> None:
        self.settings = settings

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


KIND = ReceiverKind(
    name="alertmanager", key="alertmanager", section=AlertmanagerSettings,
    default=Field(default_factory=AlertmanagerSettings),
    receivers=lambda section: ((url, section) for url in section.urls),
    build=AlertmanagerTarget, resend=lambda section: section.resend,
)
