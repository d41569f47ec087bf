"""Webhooks: change-based. One JSON object per change (`{"status": "firing"|"resolved", "alerts": [...]}`),
signed with `X-Bcd-Signature: sha256=<HMAC-SHA256 of the body>`, delivered in order from a bounded queue; the
oldest notification is dropped (and counted) when the queue is full."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator

from bcd.credentials import CredentialFile, read_credential
from bcd.durations import Duration
from bcd.outputs.alert_rules import Alert, alert_object
from bcd.outputs.alerts.delivery import (
    Receiver,
    ReceiverKind,
    Rejected,
    Sender,
    describe,
    log,
    post,
    receiver_label,
    signature,
)
from bcd.specs import Model, positive

if TYPE_CHECKING:
    import aiohttp

MAX_QUEUE = 1_000
"""Undelivered notifications kept per webhook (the oldest are dropped)."""
SIGNATURE_HEADER = "X-Bcd-Signature"


class Webhook(Model):
    """A JSON POST of every firing/resolved change, signed with HMAC-SHA256 (X-Bcd-Signature)."""

    url: Annotated[str, Field(pattern=r"^https?://[^/]+")]
    secret_file: CredentialFile | None = Field(None, description="HMAC key; relative to $CREDENTIALS_DIRECTORY")
    timeout: Duration = Field(10.0, description="deadline of one POST")
    attempts: int = Field(5, ge=1, le=20, description="tries per notification (jittered backoff)")

    _positive = field_validator("timeout")(positive)


class WebhookTarget(Receiver):
    """One webhook: every change as a signed JSON notification, delivered in order."""

    def __init__(self, url: str, settings: Webhook, sender: Sender) -> None:
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
            log().error("webhook_secret_unreadable", receiver=self.label, error=self.secret_error)

    def joined(self, firing: Sequence[Alert]) -> None:
        if firing:  # a webhook added by a reload hears what already fires
            self.changed(firing, [])

    def update(self, settings: Webhook) -> None:
        self.settings = settings
        self.load_secret()

    def resend(self) -> None:
        pass  # change-based: each change is sent once

    def changed(self, fired: Sequence[Alert], resolved: Sequence[tuple[Alert, float]]) -> None:
        if fired:
            self._enqueue("firing", [(alert, None) for alert in fired])
        if resolved:
            self._enqueue("resolved", list(resolved))

    def _enqueue(self, status: str, alerts: list[tuple[Alert, float | None]]) -> None:
        document = {
            "version": "1",
            "instance": self.sender.instance,
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


KIND = ReceiverKind(
    name="webhook", key="webhooks", section=list[Webhook], default=[],
    receivers=lambda section: ((hook.url, hook) for hook in section),
    build=WebhookTarget,
)
