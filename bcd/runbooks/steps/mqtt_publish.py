"""`mqtt_publish:` step: one message, on a connection of its own (a broker that is down is retryable)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import aiomqtt

from bcd.runbooks.specs import MqttPublishStep
from bcd.runbooks.steps.base import StepContext, StepError, StepOutcome

DEFAULT_TIMEOUT = 10.0


class MqttPublishKind:
    retry_timeouts = True

    def default_timeout(self, spec: Any) -> float:
        return DEFAULT_TIMEOUT

    async def execute(self, spec: MqttPublishStep, ctx: StepContext) -> StepOutcome:
        url = spec.url or ctx.mqtt_url
        if url is None:
            raise StepError("no broker: set mqtt.url or the step's url")
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        try:
            async with aiomqtt.Client(
                parts.hostname or "127.0.0.1", parts.port or (8883 if tls else 1883),
                username=ctx.mqtt_username, password=ctx.mqtt_password,
                tls_params=aiomqtt.TLSParameters() if tls else None,
                identifier=f"bcd-run-{ctx.run_id}",
            ) as client:
                await client.publish(spec.topic, spec.payload, qos=spec.qos, retain=spec.retain)
        except aiomqtt.MqttError as exc:
            where = f"{parts.hostname}:{parts.port or ''}"
            raise StepError(f"publish to {spec.topic} via {where}: {exc}", retryable=True) from None
        return StepOutcome(f"published {len(spec.payload)} bytes to {spec.topic}{' (retained)' if spec.retain else ''}")
