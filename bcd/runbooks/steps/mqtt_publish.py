"""`mqtt_publish:` step: one message, on a connection of its own (a broker that is down is retryable)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from bcd.broker import link_from_url
from bcd.lazy import lazy_import
from bcd.mqtt.client import connected
from bcd.runbooks.steps.base import StepContext, StepError, StepOutcome, StepPlugin
from bcd.runbooks.templates import Templated


class MqttPublishStep(Templated):
    """`mqtt_publish:` step: one message through the broker of the `mqtt:` section (or `url`)."""

    topic: str
    payload: str = ""
    retain: bool = False
    qos: Literal[0, 1, 2] = 1
    url: str | None = Field(None, pattern=r"^mqtts?://", description="default: the mqtt section's url")


if TYPE_CHECKING:
    import aiomqtt
else:  # loaded on first use: only runbooks with mqtt_publish steps need it
    aiomqtt = lazy_import("aiomqtt")

DEFAULT_TIMEOUT = 10.0


class MqttPublishKind:
    retry_timeouts = True

    def default_timeout(self, spec: Any) -> float:
        return DEFAULT_TIMEOUT

    async def execute(self, spec: MqttPublishStep, ctx: StepContext) -> StepOutcome:
        link = ctx.broker
        if spec.url is not None:  # a broker of its own: the system's trust store, the mqtt section's login
            link = link_from_url(spec.url, link.username if link else None, link.password if link else None)
        if link is None:
            raise StepError("no broker: set mqtt.url or the step's url")
        try:
            async with connected(link, identifier=f"bcd-run-{ctx.run_id}",
                                 call_timeout=DEFAULT_TIMEOUT) as client:
                await client.publish(spec.topic, spec.payload, qos=spec.qos, retain=spec.retain)
        except aiomqtt.MqttError as exc:
            raise StepError(f"publish to {spec.topic} via {link.where}: {exc}", retryable=True) from None
        return StepOutcome(f"published {len(spec.payload)} bytes to {spec.topic}{' (retained)' if spec.retain else ''}")


KIND = StepPlugin("mqtt_publish", MqttPublishStep, MqttPublishKind())
