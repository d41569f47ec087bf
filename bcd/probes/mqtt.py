"""`mqtt:` probe: connect to a broker and, with a topic, round-trip a unique message through it."""

from __future__ import annotations

import math
import re
import uuid
from typing import TYPE_CHECKING, Annotated
from urllib.parse import urlsplit

from pydantic import Field
from pydantic.dataclasses import dataclass

from bcd.broker import BrokerLink
from bcd.credentials import CredentialFile, read_credential
from bcd.lazy import lazy_import
from bcd.model import ProbeResult, Result
from bcd.mqtt.client import connack_text, connected, refused
from bcd.probes.base import Attempt, ProbeContext, ProbeKind, guarded, seconds
from bcd.probes.tls import client_context
from bcd.specs import FORBID

if TYPE_CHECKING:
    import aiomqtt
    import aiomqtt.exceptions
else:  # loaded on first use: only configs with mqtt probes need it
    aiomqtt = lazy_import("aiomqtt")

_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")


@dataclass(frozen=True, slots=True, kw_only=True, config=FORBID)
class MqttSpec:
    """`mqtt:` probe: connect to a broker, optionally round-trip a message."""

    url: Annotated[str, Field(pattern=r"^mqtts?://")]
    topic: str | None = Field(None, description="publish to and receive from this topic")
    username: str | None = None
    password_file: CredentialFile | None = Field(None, description="relative to $CREDENTIALS_DIRECTORY")
    tls_verify: bool = True
    ca_file: CredentialFile | None = None


class MqttProbe:
    """Connects (MQTT 3.1.1, clean session, TLS for mqtts://) and, when `topic` is set, subscribes,
    publishes a unique nonce with QoS 1 and waits for it to come back. FAIL when the connection is refused
    (network or broker: bad credentials, not authorised), a step is refused or errs, or the echo does not
    come back in time; OK otherwise."""

    __slots__ = ("_ctx", "_host", "_port", "_spec", "_timeout", "_tls", "_where")

    def __init__(self, spec: MqttSpec, timeout: float, ctx: ProbeContext) -> None:
        url = urlsplit(spec.url)
        secure = url.scheme == "mqtts"
        self._spec = spec
        self._timeout = timeout
        self._ctx = ctx
        self._host = url.hostname or "localhost"
        self._port = url.port or (8883 if secure else 1883)
        self._where = f"{self._host}:{self._port}"
        self._tls = client_context(spec.tls_verify, spec.ca_file) if secure else None

    async def run(self) -> ProbeResult:
        """Check once (see the class docstring); never raises except CancelledError."""
        attempt = Attempt(self._timeout, self._ctx.clock, f"connecting to broker {self._where}")
        return await guarded(attempt, self._check(attempt), lambda exc: self._describe(exc, attempt))

    async def _check(self, attempt: Attempt) -> ProbeResult:
        nonce = uuid.uuid4().hex
        # a connect cut short by the deadline leaves no socket behind (bcd.mqtt.client); paho's connect
        # thread is bounded by our timeout, so a late connection cannot outlive the run that gave up on it
        async with connected(
            self._link(), identifier=f"bcd-probe-{nonce[:12]}", call_timeout=self._timeout,
            connect_timeout=self._timeout, keepalive=max(10, math.ceil(2 * self._timeout)),
        ) as client:
            if self._spec.topic is None:
                return attempt.result(Result.OK, f"connected to broker {self._where}")
            return await self._round_trip(attempt, client, self._spec.topic, nonce)

    def _link(self) -> BrokerLink:
        password = None
        if self._spec.password_file is not None:
            try:
                password = read_credential(self._spec.password_file)
            except OSError as exc:
                raise _SetupFailed(f"cannot read password_file {self._spec.password_file}: {exc.strerror}") from None
        # paho checks the host name itself unless told not to, even when the context does not verify
        return BrokerLink(self._host, self._port, self._spec.username, password, self._tls,
                          not self._spec.tls_verify if self._tls is not None else None)

    async def _round_trip(self, attempt: Attempt, client: aiomqtt.Client, topic: str, nonce: str) -> ProbeResult:
        attempt.doing = f"subscribing to {topic} on {self._where}"
        granted = await client.subscribe(topic, qos=1)
        if refused(granted):
            return attempt.result(Result.FAIL, f"broker {self._where} refused the subscription to {topic}")
        attempt.doing = f"publishing to {topic} on {self._where}"
        await client.publish(topic, payload=nonce, qos=1)
        attempt.doing = f"waiting for the echo on {topic} from {self._where} (no echo)"
        async for message in client.messages:
            if message.payload == nonce.encode():
                said = f"round trip on {topic} via {self._where} in {seconds(attempt.elapsed())}"
                return attempt.result(Result.OK, said)
        raise aiomqtt.MqttError("the message stream ended")

    def _describe(self, exc: Exception, attempt: Attempt) -> str:
        if isinstance(exc, _SetupFailed):
            return str(exc)
        if isinstance(exc, aiomqtt.exceptions.MqttConnectError):
            return f"broker {self._where} refused the connection: {connack_text(exc)}"
        if isinstance(exc, aiomqtt.MqttError):
            text = _ERRNO.sub("", str(exc))
            if text == "Operation timed out":
                return f"timeout after {seconds(self._timeout)} {attempt.doing}"
            if attempt.doing.startswith("connecting"):
                return f"cannot connect to broker {self._where}: {text[:1].lower()}{text[1:]}"
            return f"MQTT error while {attempt.doing}: {text}"
        return f"{type(exc).__name__} while {attempt.doing}: {exc}"


class _SetupFailed(Exception):
    """This run cannot start (e.g. the password file is unreadable); the message is the reason."""


KIND = ProbeKind("mqtt", MqttSpec, MqttProbe)
