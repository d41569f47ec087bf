"""The `mqtt:` section: the broker bcd talks to. A leaf module (pydantic and the `*_file` rule only), so that
the broker link can name it without importing the whole config."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from bcd.authority import Selector
from bcd.credentials import CredentialFile
from bcd.durations import Duration
from bcd.specs import Model

MAX_IN_FLIGHT = 32  # each waits at most for etcd's deadline (a failover taking its lock): a burst, not a backlog


class CommandKey(Model):
    """A signing key of its own (one per council): the commands it signs act with its role, on its scope."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    hmac_key_file: CredentialFile = Field(description="HMAC-SHA256 key; relative to $CREDENTIALS_DIRECTORY")
    role: Literal["approver", "operator"] = "operator"
    scope: Selector | None = Field(None, description="only the services whose labels match (default: all)")


class MqttCommands(Model):
    """Operator commands over MQTT: off unless enabled, and then only HMAC-signed, fresh, never replayed."""

    enabled: bool = False
    hmac_key_file: CredentialFile | None = Field(
        None, description="HMAC-SHA256 key (an operator of every service); relative to $CREDENTIALS_DIRECTORY")
    keys: list[CommandKey] = Field([], description="more signing keys, each with its own role and scope")
    max_age: Duration = Field(60.0, description="refuse commands whose ts is older (or further ahead) than this")
    max_in_flight: int = Field(
        MAX_IN_FLIGHT, ge=1, le=10_000,
        description="commands carried out at once (running, or waiting behind one for the same service); "
                    "one more is refused as busy")

    @model_validator(mode="after")
    def _key_when_enabled(self) -> MqttCommands:
        if self.enabled and not self.hmac_key_file and not self.keys:
            raise ValueError("commands.enabled needs commands.hmac_key_file (or commands.keys)")
        if self.max_age <= 0:
            raise ValueError("max_age must be positive")
        return self


    def scopes(self) -> list[tuple[tuple[str, ...], Selector | None]]:
        """Each key's scope, with where it is in the config."""
        return [(("mqtt", "commands", "keys", key.name, "scope"), key.scope) for key in self.keys]


class MqttSettings(Model):
    """The broker bcd talks to: runbook `mqtt_publish` steps, and the state, events and commands topics."""

    url: Annotated[str, Field(pattern=r"^mqtts?://", description="mqtt://host:port or mqtts://host:port")]
    username: str | None = None
    password_file: CredentialFile | None = Field(None, description="relative to $CREDENTIALS_DIRECTORY")
    ca_file: CredentialFile | None = Field(
        None, description="mqtts://: CA bundle that signed the broker's certificate")
    cert_file: CredentialFile | None = Field(None, description="mqtts://: client certificate (with key_file)")
    key_file: CredentialFile | None = Field(None, description="mqtts://: client key")
    tls_verify: bool = Field(True, description="mqtts://: verify the broker's certificate and host name")
    topic_prefix: str | None = Field(None, description="topics live under it; default bcd/<instance>")
    buffer: int = Field(1000, ge=1, le=1_000_000, description="events kept while the broker is away")
    commands: MqttCommands = Field(default_factory=MqttCommands)

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, prefix: str | None) -> str | None:
        if prefix is None:
            return None
        prefix = prefix.rstrip("/")
        if not prefix or "+" in prefix or "#" in prefix or "" in prefix.split("/") or "\x00" in prefix:
            raise ValueError("topic_prefix must be topic levels like bcd/dorset, without wildcards or empty levels")
        return prefix
